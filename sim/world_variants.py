"""What an eval variant changes on the world's side (`anchorvla eval --variant`, sim/eval.py): the checks of a
policy without a privileged goal and the drift of the emulated world. Everything is off by default, so a
variant that names none of it runs the world exactly as before.

Checks (the colour tasks, sim/tasks.py):
- `instruction=other`: the instruction names the distractor, which becomes the goal (language is used when the
  policy then goes to the other target);
- `images=blank`: every camera frame is black (vision is used when success then collapses).

Drift, each drawn from the episode's seed (the same drift on the same episode in every variant and run):
- `slip=<m/s>`: the body moves over the ground in a way the controller did not command and does not measure (foot
  slip, velocity tracking error): an Ornstein-Uhlenbeck velocity (time constant `SLIP_TAU_S`) of this RMS per
  planar axis and of this / `SLIP_LEVER_M` rad/s in yaw, added to the body's motion, standing included. The arm's
  target moves in the body frame under a chunk.
- `nudge=<m>`: once, between `NUDGE_WINDOW_S` into the episode, the goal object (with its reach obstacle) is
  moved this far horizontally in a random direction (not while held).
- `compliance=<deg>`: the arm's servos yield under gravity: each settles `deg` x (its gravity load as a fraction of
  the servo's stall torque) away from its goal (`EmulatedServo` compliance), so the arm sags more the further out
  it reaches. Gravity loads the joints up to about 31% of the stall torque over the tasks' workspace, so past
  about 5.5 deg the sag of a far-out pose exceeds the envelope's stall check (safety.health.stall_error, 0.03
  rad) and it latches joint_stalled: at compliance=10 every episode of the demo policy ended so (eval at seeds
  30000.., 20 per task); compliance=6 stays under it.
- `tail=<sigma>`: each inference's virtual latency is lognormal, its median `--latency-ms` and its log standard
  deviation `sigma` (0.5: p99 about 3.2 x the median).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from drivers import robot_model as kin

SLIP_TAU_S = 1.0
SLIP_LEVER_M = 0.3  # yaw slip rate = planar slip / this
NUDGE_WINDOW_S = (1.0, 2.5)
STALL_TORQUE_NM = 2.9  # the STS3215's stall torque at 12 V (about 30 kg.cm, the vendor's figure)
GRAVITY = 9.81
# The SO-101's masses as points along its chain (kg): upper arm, forearm, wrist and gripper.
LINK_MASSES = (("shoulder_lift", "elbow_flex", 0.5, 0.10), ("elbow_flex", "wrist_flex", 0.5, 0.10),
               ("wrist_flex", "gripper", 0.6, 0.20))  # fmt: skip


@dataclass(frozen=True)
class WorldVariant:
    instruction_other: bool = False
    blank_images: bool = False
    slip_mps: float = 0.0
    nudge_m: float = 0.0
    compliance_deg: float = 0.0
    latency_sigma: float = 0.0

    def changed(self) -> dict:
        """The settings that differ from the world as it is (a row's record of its drift)."""
        return {k: v for k, v in asdict(self).items() if v != getattr(UNCHANGED, k)}


UNCHANGED = WorldVariant()  # the world as it is: no check, no drift


def gravity_torque(joints: np.ndarray) -> np.ndarray:
    """Torque (N.m) gravity puts on each of the five arm joints (pan .. wrist_roll) at `joints` (rad), the arm
    base level: minus the gradient of the links' potential energy, by central differences."""

    def potential(q: np.ndarray) -> float:
        poses = kin.forward(q)
        at = {**{k: t[:3, 3] for k, t in poses.frames.items()}, "gripper": poses.gripper[:3, 3]}
        return GRAVITY * sum(m * (at[a][2] + f * (at[b][2] - at[a][2])) for a, b, f, m in LINK_MASSES)

    q = np.asarray(joints[:5], dtype=np.float64)
    h = 1e-5
    return np.array([-(potential(q + h * e) - potential(q - h * e)) / (2 * h) for e in np.eye(5)])


class EpisodeDrift:
    """One episode's drift: applied to the `SimRobot` and `Task` before each tick (`before_tick`), and the
    virtual latency of each inference (`latency_ns`)."""

    def __init__(self, variant: WorldVariant, robot, task, seed: int, dt_s: float):
        self.variant, self.robot, self.task, self.dt_s = variant, robot, task, dt_s
        self._slip_rng = np.random.default_rng([seed, 11])
        self._latency_rng = np.random.default_rng([seed, 13])
        nudge_rng = np.random.default_rng([seed, 12])
        self.nudge_tick = int(nudge_rng.integers(*(round(s / dt_s) for s in NUDGE_WINDOW_S)))
        angle = nudge_rng.uniform(-math.pi, math.pi)
        self.nudge_offset = variant.nudge_m * np.array([math.cos(angle), math.sin(angle), 0.0])
        self.nudged = False
        self._decay = math.exp(-dt_s / SLIP_TAU_S)
        self._slip_scale = variant.slip_mps * np.array([1.0, 1.0, 1.0 / SLIP_LEVER_M])
        robot.base.body.slip = self._slip_rng.normal(0.0, 1.0, 3) * self._slip_scale  # already under way
        robot.arm.compliance_deg = variant.compliance_deg
        for cam in robot.cameras:
            cam.blank = variant.blank_images

    def before_tick(self, tick: int) -> None:
        if self.variant.slip_mps > 0:
            kick = self._slip_rng.normal(0.0, 1.0, 3) * math.sqrt(1 - self._decay**2)
            body = self.robot.base.body
            body.slip = self._decay * body.slip + kick * self._slip_scale
        if self.variant.nudge_m > 0 and tick == self.nudge_tick:
            self.nudged = self.task.nudge(self.robot.world, self.nudge_offset)

    def latency_ns(self, latency_ns: int) -> int:
        """The virtual latency of this inference: `latency_ns` itself, or drawn around it with `tail=`."""
        if self.variant.latency_sigma <= 0:
            return latency_ns
        return int(latency_ns * math.exp(self.variant.latency_sigma * self._latency_rng.normal()))
