"""The envelope as a pure function: (desired command, measured state, previous command, dt) -> safe command.

Per joint, in this order (ros2_control's soft joint limits, LeRobot's max_relative_target, libfranka's rate
limiter are the models):

1. non-finite goal -> the hold target (measured position, else the previous goal); never passed on;
2. max relative target: the goal stays within `max_relative_target` of the measured position; while the
   gripper is loaded (holding something) or a discrete gripper decision says 'closed', its goal stays within
   `max_squeeze` of the measured position, which caps the holding torque of a position servo;
3. soft position limits (inside the hard ones);
4. rate limits from the previous goal: speed |step|/dt <= max_velocity, and the speed may grow by at most
   max_acceleration*dt per tick (braking to a standstill is always allowed, so a hold is never delayed);
   whatever dt, |step| <= max_step (at a low control rate max_velocity*dt alone could span a joint's range).

Step 4 wins over 2 and 3 when they disagree (the goal then moves toward the allowed range at the rate limit),
so every goal sent is within the rate limits; it stays within the hard limits because the previous goal is.
The base: non-finite -> stop; velocity limits; acceleration limit on speeding up (braking is free).

Everything is numpy on a handful of floats: a few tens of microseconds a tick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anchorvla.errors import UserError
from safety.config import SafetyConfig

# Reasons a command was changed; the names appear in logs and counters.
NONFINITE = "nonfinite"
RELATIVE = "max_relative_target"
GRIPPER = "gripper_torque"
SOFT_LIMIT = "soft_limit"
VELOCITY = "velocity"
ACCELERATION = "acceleration"
BASE_NONFINITE = "base_nonfinite"
BASE_VELOCITY = "base_velocity"
BASE_ACCELERATION = "base_acceleration"


@dataclass(frozen=True)
class Limits:
    """The envelope's numbers as arrays in the arm's joint order (built once from the config)."""

    hard_lo: np.ndarray
    hard_hi: np.ndarray
    soft_lo: np.ndarray
    soft_hi: np.ndarray
    max_velocity: np.ndarray
    max_step: np.ndarray  # rad per tick, whatever the tick's length
    max_acceleration: np.ndarray
    max_relative: np.ndarray  # inf where off
    gripper: int  # index of the gripper joint, -1 when the arm has none
    gripper_loaded_above: float
    gripper_max_squeeze: float
    base_lo: np.ndarray  # (3,) vx, vy, wz
    base_hi: np.ndarray
    base_acceleration: np.ndarray

    @classmethod
    def from_config(cls, config: SafetyConfig, joint_names: tuple[str, ...]) -> Limits:
        missing = [n for n in joint_names if n not in config.joints]
        if missing:
            raise UserError(
                f"safety.joints has no limits for {', '.join(missing)} (add min/max in rad for each arm joint)"
            )
        js = [config.joints[n] for n in joint_names]
        lo = np.array([j.min for j in js], dtype=np.float64)
        hi = np.array([j.max for j in js], dtype=np.float64)
        margin = np.array([j.soft_margin for j in js])
        b = config.base
        return cls(
            hard_lo=lo,
            hard_hi=hi,
            soft_lo=lo + margin,
            soft_hi=hi - margin,
            max_velocity=np.array([j.max_velocity for j in js]),
            max_step=np.array([j.max_step for j in js]),
            max_acceleration=np.array([j.max_acceleration for j in js]),
            max_relative=np.array(
                [np.inf if j.max_relative_target is None else j.max_relative_target for j in js]
            ),
            gripper=joint_names.index(config.gripper.joint) if config.gripper.joint in joint_names else -1,
            gripper_loaded_above=config.gripper.loaded_above,
            gripper_max_squeeze=config.gripper.max_squeeze,
            base_lo=np.array([b.min_vx, -b.max_vy, -b.max_wz]),
            base_hi=np.array([b.max_vx, b.max_vy, b.max_wz]),
            base_acceleration=np.array(
                [b.max_linear_acceleration, b.max_linear_acceleration, b.max_angular_acceleration]
            ),
        )


@dataclass(frozen=True)
class Previous:
    """The last command sent: goal positions, the goal's speed at that tick, and the base velocity."""

    arm: np.ndarray
    arm_velocity: np.ndarray
    base: np.ndarray  # (3,)


@dataclass(frozen=True)
class Limited:
    arm: np.ndarray
    base: np.ndarray
    reasons: tuple[str, ...]  # empty when the desired command passed unchanged

    def as_previous(self, previous: Previous, dt_s: float) -> Previous:
        return Previous(self.arm, (self.arm - previous.arm) / dt_s, self.base)


def step_bound(limits: Limits, dt_s: float) -> np.ndarray:
    """The largest goal step a tick of `dt_s` may take per joint: max_velocity * dt, never above max_step."""
    return np.minimum(limits.max_velocity * dt_s, limits.max_step)


def _changed(before: np.ndarray, after: np.ndarray) -> bool:
    return bool((before != after).any())


def _clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """np.clip without its dispatch overhead (several times faster on a handful of floats)."""
    return np.minimum(np.maximum(x, lo), hi)


def _speed_bounds(
    v_prev: np.ndarray, v_max: np.ndarray, a_max: np.ndarray, dt_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Allowed speeds this tick: within v_prev +- a*dt widened to include 0 (braking is free), within +-v_max."""
    lo = np.minimum(v_prev - a_max * dt_s, 0.0)
    hi = np.maximum(v_prev + a_max * dt_s, 0.0)
    return np.maximum(lo, -v_max), np.minimum(hi, v_max)


def limit_command(
    desired_arm: np.ndarray,
    desired_base: np.ndarray,
    measured: np.ndarray | None,
    loads: np.ndarray | None,
    previous: Previous,
    dt_s: float,
    limits: Limits,
    gripper_closed: bool = False,
) -> Limited:
    """The safe command for one tick, and why it differs from the desired one.

    `measured`/`loads` may be None (not read this tick); non-finite measured values are ignored.
    `previous` must itself be inside the envelope (the layer seeds it with the clipped measured pose).
    `gripper_closed`: a discrete gripper decision says 'closed': the squeeze cap applies as when loaded (whatever
    the load reads, which the arm reports only at its health rate); without a measured gripper position the
    gripper goal then stays where it was.
    """
    reasons: list[str] = []
    goal = np.asarray(desired_arm, dtype=np.float64)
    prev = previous.arm
    known = np.isfinite(measured) if measured is not None else None

    finite = np.isfinite(goal)
    if not finite.all():
        hold = prev if known is None else np.where(known, measured, prev)
        goal = np.where(finite, goal, hold)
        reasons.append(NONFINITE)

    if known is not None:
        reach = limits.max_relative
        g = limits.gripper
        loaded = (
            g >= 0
            and loads is not None
            and np.isfinite(loads[g])
            and abs(loads[g]) > limits.gripper_loaded_above
        )
        if loaded or (g >= 0 and gripper_closed):
            reach = reach.copy()
            reach[g] = min(reach[g], limits.gripper_max_squeeze)
        m = np.where(known, measured, goal)
        capped = _clip(goal, m - reach, m + reach)
        changed = goal != capped
        if changed.any():
            if g >= 0 and changed[g] and reach[g] < limits.max_relative[g]:
                reasons.append(GRIPPER)
                changed[g] = False
            if changed.any():
                reasons.append(RELATIVE)
            goal = capped

    g = limits.gripper
    if gripper_closed and g >= 0 and (known is None or not known[g]) and goal[g] != prev[g]:
        goal = goal.copy()
        goal[g] = prev[g]
        reasons.append(GRIPPER)

    inside = _clip(goal, limits.soft_lo, limits.soft_hi)
    if _changed(goal, inside):
        reasons.append(SOFT_LIMIT)
        goal = inside

    v_lo, v_hi = _speed_bounds(previous.arm_velocity, limits.max_velocity, limits.max_acceleration, dt_s)
    step = goal - prev
    step_max = step_bound(limits, dt_s)
    stepped = _clip(step, np.maximum(v_lo * dt_s, -step_max), np.minimum(v_hi * dt_s, step_max))
    if _changed(step, stepped):
        reasons.append(VELOCITY if (np.abs(step) > step_max).any() else ACCELERATION)
        goal = prev + stepped

    base = np.asarray(desired_base, dtype=np.float64)
    if not np.isfinite(base).all():
        base = np.zeros(3)
        reasons.append(BASE_NONFINITE)
    clipped = _clip(base, limits.base_lo, limits.base_hi)
    if _changed(base, clipped):
        reasons.append(BASE_VELOCITY)
        base = clipped
    b_lo, b_hi = _speed_bounds(
        previous.base, np.maximum(-limits.base_lo, limits.base_hi), limits.base_acceleration, dt_s
    )
    eased = _clip(base, b_lo, b_hi)
    if _changed(base, eased):
        reasons.append(BASE_ACCELERATION)
        base = eased
    return Limited(goal, base, tuple(reasons))


def cap_residual(correction: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, bool]:
    """The residual correction clipped to +-caps per channel (non-finite -> 0); True when it was changed."""
    finite = np.where(np.isfinite(correction), correction, 0.0)
    capped = _clip(finite, -caps, caps)
    return capped, _changed(np.asarray(correction), capped)
