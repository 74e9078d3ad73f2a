"""Plain data crossing module boundaries at control rate.

SI units (radians, metres, seconds, m/s, rad/s); timestamps are `time.monotonic_ns()` integers.
Arrays are numpy float64 with a layout named by the accompanying `joint_names`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SO101_JOINTS: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
)


@dataclass(frozen=True)
class ArmState:
    """Measured arm state. `positions`/`velocities` in rad, rad/s; health fields may be stale (see `health_t_ns`)."""

    t_ns: int
    joint_names: tuple[str, ...]
    positions: np.ndarray
    velocities: np.ndarray
    loads: np.ndarray | None = None  # fraction of max torque, signed
    temperatures_c: np.ndarray | None = None
    voltages_v: np.ndarray | None = None
    error_bits: np.ndarray | None = (
        None  # per servo status byte (FACTS: 1 voltage, 2 angle, 4 heat, 8 current, 32 load)
    )
    health_t_ns: int | None = None  # when the health fields were last read
    comm_failures: int = 0  # reads/writes that failed after retries since start


@dataclass(frozen=True)
class BaseState:
    """Measured base state in the odometry frame: position (x, y, z) m, yaw rad, body-frame velocity."""

    t_ns: int
    position: np.ndarray  # (3,)
    yaw: float
    velocity: np.ndarray  # (3,) vx, vy, vz in the body frame, m/s
    yaw_speed: float  # rad/s
    mode: int = 0
    rpy: np.ndarray | None = None
    error_code: int = 0


@dataclass(frozen=True)
class Frame:
    """One colour image from a camera: HxWx3 uint8 RGB, captured at `t_ns` (monotonic clock)."""

    t_ns: int
    camera: str
    image: np.ndarray
    seq: int = 0


@dataclass(frozen=True)
class BaseVelocity:
    """Body-frame velocity command for the base."""

    vx: float = 0.0
    vy: float = 0.0
    wz: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.array([self.vx, self.vy, self.wz], dtype=np.float64)


@dataclass(frozen=True)
class Command:
    """What one fast-loop tick sends to the robot, after the safety envelope passed it.

    `arm_positions` are joint goal positions in rad (layout `joint_names`); `base` is a body-frame
    velocity. `hold` marks a command that only keeps the arm where it is and stops the base.
    `gripper_closed`: a discrete gripper decision said 'closed' (holding): the envelope then caps the gripper's
    squeeze (its holding torque) whatever the measured load reads.
    """

    t_ns: int
    joint_names: tuple[str, ...]
    arm_positions: np.ndarray
    base: BaseVelocity = field(default_factory=BaseVelocity)
    hold: bool = False
    gripper_closed: bool = False


@dataclass(frozen=True)
class Sticks:
    """A hand controller's state (a gamepad or the Go2's wireless remote), as the operator holds it now.

    Axes in [-1, 1], positive right (`lx`, `rx`) and up (`ly`, `ry`); `buttons` names those held down:
    A B X Y L1 R1 L2 R2 start select up down left right (the Go2 remote's names; gamepads map onto them).
    """

    t_ns: int
    lx: float = 0.0
    ly: float = 0.0
    rx: float = 0.0
    ry: float = 0.0
    buttons: frozenset[str] = frozenset()
