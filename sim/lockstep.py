"""In-process emulated devices on a virtual clock, for lockstep episodes (recording demonstrations, evaluation).

They step the same `World` as the real-time emulators do, with the same models, minus the transports:

- `SimArm`: the six `EmulatedServo`s of the pty bus emulator (the same servo physics), addressed directly
  instead of over a pseudo-terminal; joints go through the same calibration and into the world.
- `SimBase`: the emulated Go2's body model (drivers/emulated/go2_body.py), its pose written into the world.
- `SimCamera`: the synthetic camera's renderer, rendering the world when asked, stamped with the virtual time.

Nothing here waits: `VirtualClock.advance` moves time, and every device reads it.
"""

from __future__ import annotations

import math

import numpy as np

from drivers.emulated.cameras import SyntheticCamera
from drivers.emulated.go2_body import STANDING_HEIGHT_M, Go2Body
from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.emulated.sts_servo import EmulatedServo
from drivers.emulated.world import World
from drivers.feetech.calibration import ArmCalibration, default_calibration
from drivers.feetech.so101 import ServoTuning
from drivers.feetech.table import TICKS_PER_REV, encode, reg, to_bytes
from drivers.types import ArmState, BaseState, Frame
from drivers.unitree import sport_api as api
from sim.tasks import Task, start_task
from sim.world_variants import STALL_TORQUE_NM, gravity_torque

_GOAL = reg("Goal_Position")
_TORQUE = reg("Torque_Enable")


class VirtualClock:
    """Monotonic nanoseconds that move only when told."""

    def __init__(self, start_ns: int = 1_000_000_000):
        self.now_ns = start_ns

    def advance(self, dt_ns: int) -> None:
        self.now_ns += dt_ns

    @property
    def now_s(self) -> float:
        return self.now_ns / 1e9


class SimArm:
    """`drivers.protocols.Arm` over emulated STS3215 servos, without the bus."""

    def __init__(self, world: World, clock: VirtualClock, calibration: ArmCalibration | None = None):
        self.world, self.clock = world, clock
        self.calibration = calibration or default_calibration()
        self.joint_names = self.calibration.joint_names
        self.servos = [EmulatedServo(i) for i in self.calibration.ids]
        ServoBusEmulator.apply_calibration(self.servos, self.calibration)
        self._configure(ServoTuning())
        self._index = [world.joint_names.index(n) for n in self.joint_names]
        self.compliance_deg = 0.0  # the servos' yield at full load under gravity (eval's compliance=)

    def _configure(self, t: ServoTuning) -> None:
        """The registers the SO-101 driver's `configure()` writes, then torque on."""
        gripper_id = self.calibration.joints["gripper"].id if "gripper" in self.calibration.joints else None
        for s in self.servos:
            gripper = s.id == gripper_id
            values = {
                "P_Coefficient": t.p_coefficient,
                "I_Coefficient": t.i_coefficient,
                "D_Coefficient": t.d_coefficient,
                "Acceleration": t.acceleration,
                "Maximum_Acceleration": t.acceleration,
                "Torque_Limit": t.gripper_torque_limit if gripper else 1000,
            }
            if gripper:
                values["Protection_Current"] = t.gripper_protection_current
                values["Overload_Torque"] = t.gripper_overload_torque
            for name, value in values.items():
                s.set_value(name, value)

    def start(self) -> None:
        self._step()

    def _load_gravity(self) -> None:
        """With compliance: each servo's external load is gravity's torque on its joint at the present pose (as a
        fraction of the stall torque, signed in ticks), and it yields `compliance_deg` at full load."""
        with self.world.lock:
            joints = self.world.joint_positions[self._index].copy()
        torque = np.append(gravity_torque(joints), np.zeros(len(self.servos) - 5))
        sign = np.array([-1.0 if j.drive_mode else 1.0 for j in self.calibration.joints.values()])
        for s, load in zip(self.servos, sign * torque / STALL_TORQUE_NM, strict=True):
            s.faults.external_load = float(load)
            s.faults.compliance_ticks = self.compliance_deg / 360.0 * TICKS_PER_REV

    def _step(self) -> None:
        if self.compliance_deg:
            self._load_gravity()
        for s in self.servos:
            s.advance(self.clock.now_s)
        ticks = [s.present_ticks() for s in self.servos]
        with self.world.lock:
            self.world.joint_positions[self._index] = self.calibration.ticks_to_rad(ticks)

    def place(self, positions: np.ndarray) -> None:
        """Put the joints at `positions` (rad) at rest with torque on (the start pose of an episode).

        The servos start each episode cooled down, as after a pause, so that episodes run back to back (an
        evaluation, a recording) are independent trials: heat carried over would add up to a servo's shutdown."""
        for s in self.servos:  # unloaded: a compliance the episode wants is loaded at its first step
            s.faults.external_load = s.faults.compliance_ticks = 0.0
        for s, t in zip(self.servos, self.calibration.rad_to_ticks(positions), strict=True):
            s.rest()
            s.move_by_hand(float(t))
            s.set_value("Goal_Position", int(t))
            s.write(_TORQUE.address, bytes([1]))  # torque on, clearing any latched protection
        self._step()

    def read_state(self) -> ArmState:
        self._step()
        with self.world.lock:
            positions = self.world.joint_positions[self._index].copy()
        sign = np.array([-1.0 if j.drive_mode else 1.0 for j in self.calibration.joints.values()])
        velocities = sign * np.array([s.velocity for s in self.servos]) * (2 * math.pi / 4096)
        return ArmState(self.clock.now_ns, self.joint_names, positions, velocities)

    def write_goal(self, positions: np.ndarray) -> None:
        self._step()
        for s, t in zip(self.servos, self.calibration.rad_to_ticks(positions), strict=True):
            s.write(_GOAL.address, bytes(to_bytes(encode(int(t), _GOAL), _GOAL.size)))

    def stop(self) -> None:
        pass


class SimBase:
    """`drivers.protocols.Base` over the emulated Go2's body model (velocity tracking with its acceleration limits,
    the ~1 s hold of the last Move), standing in balance-stand mode, without DDS."""

    def __init__(self, world: World, clock: VirtualClock):
        self.world, self.clock = world, clock
        self.body = self._standing_body()

    def _standing_body(self) -> Go2Body:
        return Go2Body(mode=api.MODE_BALANCE_STAND, body_height=STANDING_HEIGHT_M, t_s=self.clock.now_s)

    def start(self) -> None:
        """A body at rest at the world's base pose."""
        self.body = self._standing_body()
        with self.world.lock:
            self.body.x, self.body.y, self.body.yaw = (float(v) for v in self.world.base_pose)

    def _step(self) -> None:
        self.body.step(self.clock.now_s)
        self.world.set_base_pose(self.body.x, self.body.y, self.body.yaw)

    def read_state(self) -> BaseState:
        self._step()
        b = self.body
        return BaseState(
            self.clock.now_ns,
            np.array([b.x, b.y, self.world.base_height]),
            float(b.yaw),
            np.array([b.velocity[0], b.velocity[1], 0.0]),
            float(b.velocity[2]),
            mode=b.mode,
        )

    def move(self, vx: float, vy: float, wz: float) -> None:
        self.body.request(api.MOVE, {"x": vx, "y": vy, "z": wz}, self.clock.now_s)
        self._step()

    def stop_move(self) -> None:
        self.body.request(api.STOP_MOVE, {}, self.clock.now_s)

    def stop(self) -> None:
        pass


class SimCamera:
    """`drivers.protocols.Camera`: renders the world at the virtual time of each new frame period."""

    def __init__(
        self, name: str, world: World, clock: VirtualClock, view: str, width: int, height: int, fps: int
    ):
        self.name, self.clock = name, clock
        self._camera = SyntheticCamera(name, world, view, width, height, fps)
        self.period_ns = self._camera.period_ns
        self._latest: Frame | None = None
        self.blank = False  # eval's images=blank: every frame black (the vision check)

    def start(self) -> None:
        self._latest = None

    def latest(self) -> Frame:
        """The frame of the current frame period, rendered the first time it is asked for."""
        slot = self.clock.now_ns - self.clock.now_ns % self.period_ns
        if self._latest is None or self._latest.t_ns != slot:
            frame = self._camera.render_now()
            image = np.zeros_like(frame.image) if self.blank else frame.image
            self._latest = Frame(slot, self.name, image, frame.seq)
        return self._latest

    def stop(self) -> None:
        pass


class SimRobot:
    """One world with the arm, base and cameras stepping it on one virtual clock."""

    def __init__(self, cameras: list[tuple[str, str, int, int, int]], world: World | None = None):
        """`cameras`: (name, view, width, height, fps) each."""
        self.world = world or World()
        self.clock = VirtualClock()
        self.arm = SimArm(self.world, self.clock)
        self.base = SimBase(self.world, self.clock)
        self.cameras = [SimCamera(n, self.world, self.clock, v, w, h, f) for n, v, w, h, f in cameras]

    def start_episode(self, task_name: str, seed: int) -> Task:
        """Place task `task_name`'s objects and the arm's start pose (near upright, jittered) from `seed`."""
        rng = np.random.default_rng([seed, 1])
        start = np.zeros(len(self.arm.joint_names))
        start[:4] += np.clip(
            rng.normal(0.0, 0.05, 4), -0.06, 0.06
        )  # wider, the tool can start at reach's obstacle
        self.arm.place(start)
        task = start_task(task_name, self.world, seed)
        for device in (self.arm, self.base, *self.cameras):
            device.start()
        return task
