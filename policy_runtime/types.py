"""What the slow loop hands the policy and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers.types import ArmState, BaseState, Frame

BASE_CHANNELS: tuple[str, ...] = ("base.vx", "base.vy", "base.wz")


def arm_channel(joint: str) -> str:
    return f"arm.{joint}"


@dataclass(frozen=True)
class Observation:
    """A snapshot of the robot at `t_ns` (the state of the fast-loop tick it was taken at) plus the newest frames."""

    t_ns: int
    arm: ArmState
    base: BaseState | None
    frames: dict[str, Frame]
    instruction: str = ""
    # First frame of the episode per camera, for policies that keep an anchor image (AnchorVLA4D).
    anchor_frames: dict[str, Frame] = field(default_factory=dict)
    # Target object/goal position (x, y, z) in the arm base frame, m (FACTS.md: the paper's proprio has it), from
    # perception or the simulator's task (sim/tasks.py); None when nothing supplies one.
    goal: np.ndarray | None = None
    # The arm and base state of the fast-loop tick before `t_ns` (None at the first tick), for policies that read
    # the state delta (AnoleVLA; policy_runtime/preprocess.py `state_delta`).
    previous_arm: ArmState | None = None
    previous_base: BaseState | None = None
    # Real-time chunking: the actions (p, D), SI units, the plan runs before this observation's chunk takes over;
    # the chunk's first p actions are conditioned to them (onboard/loops.py SlowLoop). None: no prefix.
    prefix: np.ndarray | None = None

    def frame_ages_s(self) -> dict[str, float]:
        return {name: (self.t_ns - f.t_ns) / 1e9 for name, f in self.frames.items()}


@dataclass(frozen=True)
class GripperPlan:
    """A chunk's discrete gripper decision (AnchorRefine): one logit per action (positive: closed), the half-width
    of the hysteresis band around 0, and the goals (SI units) that replace action column `channel` (`open_value`
    None: while open, the plan's own value runs)."""

    channel: int
    logits: np.ndarray  # (T,)
    margin: float
    closed_value: float
    open_value: float | None


@dataclass(frozen=True)
class ActionChunk:
    """Actions in SI units, one row per control step: action k is meant for time `t_obs_ns + k*dt_ns`.

    `channels` names the columns (e.g. base.vx, base.vy, base.wz, arm.shoulder_pan, ..., arm.gripper).
    `anchor_index`/`scores` come from the anchored head when it ran; `context` is what the residual needs
    from the backbone call that produced the chunk (opaque to the runtime); `gripper` the discrete gripper
    decision when the policy has a gripper head.
    """

    t_obs_ns: int
    dt_ns: int
    channels: tuple[str, ...]
    actions: np.ndarray  # (T, D)
    anchor_index: int | None = None
    scores: np.ndarray | None = None
    context: Any = None
    gripper: GripperPlan | None = None

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def time_of(self, k: int) -> int:
        return self.t_obs_ns + k * self.dt_ns

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.actions)))
