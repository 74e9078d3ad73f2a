"""Safety configuration (pydantic: it is read from the controller's YAML file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JointLimit(_Strict):
    """Limits of one joint in rad. `min`/`max` are hard limits; commands are clamped inside them."""

    min: float
    max: float
    max_velocity: float = Field(default=2.0, gt=0, description="rad/s; bounds the step per tick")


def _so101_limits() -> dict[str, JointLimit]:
    """The common SO-101 URDF limits (FACTS.md), in rad."""
    deg = 3.141592653589793 / 180.0
    return {
        "shoulder_pan": JointLimit(min=-110 * deg, max=110 * deg),
        "shoulder_lift": JointLimit(min=-100 * deg, max=100 * deg),
        "elbow_flex": JointLimit(min=-96.8 * deg, max=96.8 * deg),
        "wrist_flex": JointLimit(min=-95 * deg, max=95 * deg),
        "wrist_roll": JointLimit(min=-157.2 * deg, max=162.8 * deg),
        "gripper": JointLimit(min=-10 * deg, max=100 * deg),
    }


class BaseLimits(_Strict):
    """Base velocity limits, well inside the Go2's own (vx -2.5..3.8, vy -1..1, wz -4..4)."""

    max_vx: float = Field(default=0.6, gt=0, le=3.8)
    min_vx: float = Field(default=-0.4, lt=0, ge=-2.5)
    max_vy: float = Field(default=0.3, gt=0, le=1.0)
    max_wz: float = Field(default=1.0, gt=0, le=4.0)


class SafetyConfig(_Strict):
    joints: dict[str, JointLimit] = Field(default_factory=_so101_limits)
    base: BaseLimits = Field(default_factory=BaseLimits)
