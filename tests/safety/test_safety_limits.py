"""The limiter's individual rules, each on a case small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS
from safety.config import JointLimit, SafetyConfig
from safety.limits import (
    ACCELERATION,
    BASE_ACCELERATION,
    BASE_NONFINITE,
    BASE_VELOCITY,
    GRIPPER,
    NONFINITE,
    RELATIVE,
    SOFT_LIMIT,
    VELOCITY,
    Limits,
    Previous,
    cap_residual,
)
from safety.limits import limit_command as limit

LIM = Limits.from_config(SafetyConfig(), SO101_JOINTS)
N = len(SO101_JOINTS)
DT = 1 / 15
G = SO101_JOINTS.index("gripper")


def at_rest(arm=None, base=None) -> Previous:
    return Previous(
        np.zeros(N) if arm is None else np.asarray(arm, float),
        np.zeros(N),
        np.zeros(3) if base is None else np.asarray(base, float),
    )


def test_a_command_inside_every_limit_passes_unchanged():
    desired = np.full(N, 0.05)
    out = limit(desired, np.array([0.05, 0.0, 0.1]), np.zeros(N), np.zeros(N), at_rest(), DT, LIM)
    np.testing.assert_array_equal(out.arm, desired)
    np.testing.assert_array_equal(out.base, [0.05, 0.0, 0.1])
    assert out.reasons == ()


def test_nan_and_inf_hold_the_measured_position_per_joint():
    measured = np.linspace(-0.02, 0.02, N)
    desired = np.full(N, 0.01)
    desired[1], desired[3] = np.nan, np.inf
    out = limit(desired, np.zeros(3), measured, None, at_rest(), DT, LIM)
    assert out.arm[1] == measured[1] and out.arm[3] == measured[3]
    assert out.arm[0] == 0.01
    assert NONFINITE in out.reasons


def test_nan_with_no_measured_state_holds_the_previous_goal():
    prev = np.full(N, 0.2)
    out = limit(np.full(N, np.nan), np.zeros(3), None, None, at_rest(prev), DT, LIM)
    np.testing.assert_array_equal(out.arm, prev)


def test_non_finite_base_stops_the_base():
    out = limit(np.zeros(N), np.array([0.1, np.nan, 0.0]), np.zeros(N), None, at_rest(), DT, LIM)
    np.testing.assert_array_equal(out.base, [0.0, 0.0, 0.0])
    assert BASE_NONFINITE in out.reasons


def test_goal_beyond_the_soft_limit_is_clamped_there():
    prev = LIM.soft_hi - 0.01
    out = limit(LIM.hard_hi + 1.0, np.zeros(3), LIM.soft_hi - 0.01, None, at_rest(prev), DT, LIM)
    np.testing.assert_allclose(out.arm, LIM.soft_hi)
    assert SOFT_LIMIT in out.reasons and np.all(out.arm < LIM.hard_hi)


def test_goal_stays_within_max_relative_target_of_the_measured_position():
    prev = np.full(N, 0.3)
    measured = np.zeros(N)
    out = limit(np.full(N, 0.6), np.zeros(3), measured, None, at_rest(prev), DT, LIM)
    np.testing.assert_allclose(out.arm, LIM.max_relative)
    assert RELATIVE in out.reasons


def test_step_is_bounded_by_max_velocity():
    out = limit(
        np.full(N, 0.3),
        np.zeros(3),
        np.full(N, 0.3),
        None,
        Previous(np.zeros(N), LIM.max_velocity, np.zeros(3)),
        DT,
        LIM,
    )
    np.testing.assert_allclose(out.arm, LIM.max_velocity * DT)
    assert VELOCITY in out.reasons


def test_speed_grows_by_at_most_max_acceleration_per_tick_but_braking_is_free():
    out = limit(np.full(N, 0.1), np.zeros(3), np.zeros(N), None, at_rest(), DT, LIM)
    np.testing.assert_allclose(out.arm, LIM.max_acceleration * DT * DT)
    assert ACCELERATION in out.reasons
    moving = Previous(np.zeros(N), np.full(N, 1.5), np.zeros(3))
    stop = limit(np.zeros(N), np.zeros(3), np.zeros(N), None, moving, DT, LIM)
    np.testing.assert_array_equal(stop.arm, np.zeros(N))  # from 1.5 rad/s to a standstill in one tick
    assert stop.reasons == ()


def test_loaded_gripper_goal_is_capped_near_its_measured_position():
    measured = np.zeros(N)
    measured[G] = 0.5
    prev = measured.copy()
    desired = measured.copy()
    desired[G] = 0.4  # closing harder on the object
    loads = np.zeros(N)
    loads[G] = 0.6
    out = limit(desired, np.zeros(3), measured, loads, at_rest(prev), 1.0, LIM)
    assert out.arm[G] == pytest.approx(0.5 - LIM.gripper_max_squeeze)
    assert GRIPPER in out.reasons and RELATIVE not in out.reasons
    unloaded = limit(desired, np.zeros(3), measured, np.zeros(N), at_rest(prev), 1.0, LIM)
    assert unloaded.arm[G] == pytest.approx(0.4)


def test_base_velocity_and_acceleration_limits():
    out = limit(
        np.zeros(N), np.array([5.0, -5.0, 9.0]), np.zeros(N), None, at_rest(base=[0.6, -0.3, 1.0]), DT, LIM
    )
    np.testing.assert_allclose(out.base, LIM.base_hi * [1, 0, 1] + LIM.base_lo * [0, 1, 0])
    assert BASE_VELOCITY in out.reasons
    eased = limit(np.zeros(N), np.array([0.6, 0.0, 0.0]), np.zeros(N), None, at_rest(), DT, LIM)
    assert eased.base[0] == pytest.approx(LIM.base_acceleration[0] * DT)
    assert BASE_ACCELERATION in eased.reasons


def test_residual_cap():
    capped, changed = cap_residual(np.array([0.5, -0.5, np.nan, 0.01]), np.full(4, 0.05))
    np.testing.assert_array_equal(capped, [0.05, -0.05, 0.0, 0.01])
    assert changed


def test_config_rejects_inverted_limits_and_unknown_keys():
    with pytest.raises(ValidationError, match="soft_margin"):
        JointLimit(min=0.1, max=0.1)
    with pytest.raises(ValidationError):
        SafetyConfig.model_validate({"base": {"max_vx": 9.0}})  # beyond the Go2's own 3.8 m/s
    with pytest.raises(ValidationError, match="Extra inputs"):
        SafetyConfig.model_validate({"health": {"max_temp": 60}})
    with pytest.raises(UserError, match="no limits for elbow"):
        Limits.from_config(SafetyConfig(joints={"a": JointLimit(min=-math.pi, max=math.pi)}), ("a", "elbow"))
