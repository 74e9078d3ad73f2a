"""Safety configuration: the `safety:` section of the controller's YAML file (pydantic).

Units are SI (rad, rad/s, rad/s^2, m/s, m/s^2, s, V, deg C). Defaults sit well inside the vendors' ranges.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    """Unknown keys and non-finite numbers are refused: a limit of .inf or a .nan rest pose bounds nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class JointLimit(_Strict):
    """Limits of one joint. `min`/`max` are the hard (physical) limits in rad; commands are kept inside the
    soft limits `min + soft_margin .. max - soft_margin`."""

    min: float
    max: float
    soft_margin: float = Field(
        default=0.035, ge=0, le=0.5, description="rad between the hard and soft limits"
    )
    max_velocity: float = Field(
        default=2.0, gt=0, le=10.0, description="rad/s; bounds the goal's step per tick"
    )
    max_step: float = Field(
        default=0.2,
        gt=0,
        le=1.0,
        description="rad; the goal's step per tick whatever the control rate (max_velocity alone allows "
        "max_velocity / rate_hz, which grows without bound as the rate falls)",
    )
    max_acceleration: float = Field(
        default=20.0,
        gt=0,
        le=500.0,
        description="rad/s^2; bounds how fast the goal's speed grows (braking is free)",
    )
    max_relative_target: float | None = Field(
        default=0.35,
        gt=0,
        le=math.pi,
        description="rad; the goal stays this close to the measured position (None: off)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> JointLimit:
        if not self.min + 2 * self.soft_margin < self.max:
            raise ValueError(f"min ({self.min}) + 2*soft_margin must be below max ({self.max})")
        return self


def _so101_limits() -> dict[str, JointLimit]:
    """The common SO-101 URDF limits (FACTS.md), in rad."""
    deg = math.pi / 180.0
    return {
        "shoulder_pan": JointLimit(min=-110 * deg, max=110 * deg),
        "shoulder_lift": JointLimit(min=-100 * deg, max=100 * deg),
        "elbow_flex": JointLimit(min=-96.8 * deg, max=96.8 * deg),
        "wrist_flex": JointLimit(min=-95 * deg, max=95 * deg),
        "wrist_roll": JointLimit(min=-157.2 * deg, max=162.8 * deg),
        "gripper": JointLimit(min=-10 * deg, max=100 * deg),
    }


class GripperLimits(_Strict):
    """Holding-torque cap of the gripper. A position servo pushes with a torque that grows with the gap between
    goal and measured position; while the gripper is loaded (holding something), that gap is capped."""

    joint: str = Field(default="gripper", min_length=1)
    loaded_above: float = Field(
        default=0.25, gt=0, le=1.0, description="|load| (fraction of max torque) that counts as holding"
    )
    max_squeeze: float = Field(
        default=0.08, gt=0, le=1.0, description="rad the goal may lead the measured position when loaded"
    )


class BaseLimits(_Strict):
    """Base velocity and acceleration limits, well inside the Go2's own (vx -2.5..3.8, vy -1..1, wz -4..4)."""

    max_vx: float = Field(default=0.6, gt=0, le=3.8)
    min_vx: float = Field(default=-0.4, lt=0, ge=-2.5)
    max_vy: float = Field(default=0.3, gt=0, le=1.0)
    max_wz: float = Field(default=1.0, gt=0, le=4.0)
    max_linear_acceleration: float = Field(
        default=1.5, gt=0, le=10.0, description="m/s^2 speeding up (braking is free)"
    )
    max_angular_acceleration: float = Field(
        default=3.0, gt=0, le=20.0, description="rad/s^2 speeding up (braking is free)"
    )


class ResidualLimits(_Strict):
    """Cap on the residual correction the fast loop adds to each planned action, per channel kind."""

    max_arm: float = Field(default=0.05, ge=0, le=0.5, description="rad per joint")
    max_base_linear: float = Field(default=0.05, ge=0, le=1.0, description="m/s")
    max_base_angular: float = Field(default=0.1, ge=0, le=2.0, description="rad/s")


class HealthThresholds(_Strict):
    """Servo health: warn first, latch a fault past the fault threshold (STS3215 shuts down at 70 C by default)."""

    warn_temperature_c: float = Field(default=55.0, gt=0, le=100)
    fault_temperature_c: float = Field(default=65.0, gt=0, le=100)
    warn_min_voltage_v: float = Field(default=6.5, gt=0, le=20)
    fault_min_voltage_v: float = Field(default=6.0, gt=0, le=20)
    fault_max_voltage_v: float = Field(default=13.0, gt=0, le=20)
    warn_load: float = Field(default=0.7, gt=0, le=1.0, description="|load| as a fraction of max torque")
    fault_load: float = Field(default=0.9, gt=0, le=1.0)
    overload_ticks: int = Field(default=2, ge=1, le=100, description="consecutive ticks above fault_load")
    fault_error_bits: int = Field(
        default=1 | 4 | 8 | 32, ge=0, le=255, description="status bits that latch a fault"
    )
    stall_error: float = Field(default=0.03, gt=0, le=1.0, description="rad between goal and position")
    stall_speed: float = Field(
        default=0.05, gt=0, le=5.0, description="rad/s below which a joint counts as still"
    )
    stall_ticks: int = Field(default=2, ge=1, le=100)
    out_of_range_tolerance: float = Field(
        default=0.05, ge=0, le=1.0, description="rad a measured joint may sit beyond its hard limits"
    )

    @model_validator(mode="after")
    def _ordered(self) -> HealthThresholds:
        if not self.warn_temperature_c <= self.fault_temperature_c:
            raise ValueError("warn_temperature_c must not exceed fault_temperature_c")
        if not self.fault_min_voltage_v <= self.warn_min_voltage_v < self.fault_max_voltage_v:
            raise ValueError("need fault_min_voltage_v <= warn_min_voltage_v < fault_max_voltage_v")
        if not self.warn_load <= self.fault_load:
            raise ValueError("warn_load must not exceed fault_load")
        return self


class StalenessLimits(_Strict):
    """How old each input may be before the monitor acts (defaults detect within 3 ticks at 15 Hz)."""

    arm_state_s: float = Field(default=0.1, gt=0, le=10)
    base_state_s: float = Field(default=0.1, gt=0, le=10)
    frame_s: float = Field(default=0.12, gt=0, le=10)
    first_frame_s: float = Field(
        default=5.0, gt=0, le=60, description="start-up ends with an error when a camera has no frame by then"
    )
    frame_reaction: Literal["hold", "fault"] = Field(
        default="hold",
        description="stale frames: hold while they last and resume with the stream, or latch a fault",
    )
    chunk_s: float = Field(
        default=1.0, gt=0, le=60, description="an action from an older observation is not run"
    )
    comms_loss_ticks: int = Field(
        default=2,
        ge=1,
        le=100,
        description="arm: consecutive failed reads/writes (after the driver's retries) that latch",
    )
    base_comms_loss_ticks: int = Field(
        default=1,
        ge=1,
        le=100,
        description="base: failed reads that latch (a Go2 read fails only once its DDS state is already stale)",
    )
    inference_overrun_factor: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="an inference in flight longer than this many executed chunks latches",
    )
    inference_overrun_min_s: float = Field(
        default=0.25, gt=0, le=60, description="floor of that budget, for chunks that last only a tick or two"
    )


class StopConfig(_Strict):
    """Timeouts of the stop sequences and what the e-stop does to the base."""

    step_timeout_s: float = Field(default=0.2, gt=0, le=5, description="longest wait for one device call")
    fault_reaction: Literal["safe_stop", "estop"] = "safe_stop"
    estop_base: Literal["stop_move", "damp"] = Field(
        default="stop_move", description="damp: joints go limp, the body sags"
    )
    on_exit: Literal["safe_stop", "park_release"] = "safe_stop"
    rest_pose: dict[str, float] = Field(
        default_factory=dict, description="rad per joint for park; missing joints: 0"
    )
    park_speed: float = Field(default=0.3, gt=0, le=2.0, description="rad/s while parking")
    park_tolerance: float = Field(
        default=0.03, gt=0, le=0.5, description="rad from the rest pose that counts as parked"
    )
    park_timeout_s: float = Field(default=10.0, gt=0, le=60)


class SafetyConfig(_Strict):
    joints: dict[str, JointLimit] = Field(default_factory=_so101_limits)
    gripper: GripperLimits = Field(default_factory=GripperLimits)
    base: BaseLimits = Field(default_factory=BaseLimits)
    residual: ResidualLimits = Field(default_factory=ResidualLimits)
    health: HealthThresholds = Field(default_factory=HealthThresholds)
    staleness: StalenessLimits = Field(default_factory=StalenessLimits)
    stop: StopConfig = Field(default_factory=StopConfig)
    nonfinite_chunks: int = Field(
        default=2, ge=1, le=100, description="chunks with NaN/inf in a row that latch policy_nonfinite"
    )
