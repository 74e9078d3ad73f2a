"""The emulated Go2's body model: mode machine, Move limits and hold, acceleration limits, pose (no DDS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers.emulated.go2_body import ERR_REFUSED, STANDING_HEIGHT_M, BodyLimits, Go2Body
from drivers.unitree import sport_api as api
from tools.go2_scenarios import integrate_twists


def standing(mode=api.MODE_BALANCE_STAND, **limits) -> Go2Body:
    return Go2Body(BodyLimits(**limits), mode=mode, body_height=STANDING_HEIGHT_M)


def run(body: Go2Body, until_s: float, step_s: float = 0.01) -> None:
    t = body.t_s
    while t < until_s - 1e-12:
        t = min(until_s, t + step_s)
        body.step(t)


def test_stand_up_locks_the_joints_and_move_has_no_effect_until_balance_stand():
    body = Go2Body(BodyLimits(transition_s=0.5))
    assert body.request(api.BALANCE_STAND, {}, 0.0) == ERR_REFUSED  # lying down
    assert body.request(api.STAND_UP, {}, 0.0) == api.OK
    run(body, 0.6)
    assert body.mode == api.MODE_JOINT_LOCK and body.body_height > 0.3
    assert body.request(api.MOVE, {"x": 0.5}, 0.6) == ERR_REFUSED
    run(body, 1.0)
    assert body.x == 0.0
    assert body.request(api.BALANCE_STAND, {}, 1.0) == api.OK and body.mode == api.MODE_BALANCE_STAND
    assert body.request(api.MOVE, {"x": 0.5}, 1.0) == api.OK and body.mode == api.MODE_LOCOMOTION


def test_stop_move_returns_to_balance_stand_and_stand_down_lies_down():
    body = standing(transition_s=0.2)
    body.request(api.MOVE, {"x": 1.0}, 0.0)
    run(body, 1.0)
    body.request(api.STOP_MOVE, {}, 1.0)
    run(body, 2.0)
    assert body.mode == api.MODE_BALANCE_STAND and not np.any(body.velocity)
    body.request(api.STAND_DOWN, {}, 2.0)
    run(body, 2.3)
    assert body.mode == api.MODE_LIE_DOWN and body.body_height < 0.1


@pytest.mark.parametrize("api_id", [api.EULER, api.SIT, api.RISE_SIT, 1234])
def test_apis_it_does_not_implement_answer_3203(api_id):
    assert standing().request(api_id, {}, 0.0) == api.ERR_API_NOT_IMPLEMENTED == 3203


def test_move_is_clipped_to_the_vendor_limits():
    body = standing()
    body.request(api.MOVE, {"x": 10.0, "y": -5.0, "z": 9.0}, 0.0)
    assert list(body.target) == [3.8, -1.0, 4.0]
    assert body.request(api.MOVE, {"x": float("nan")}, 0.0) == api.ERR_API_PARAMETER


def test_acceleration_is_limited():
    body = standing(accel=(2.0, 1.5, 6.0))
    body.request(api.MOVE, {"x": 1.0, "y": 1.0, "z": 1.0}, 0.0)
    run(body, 0.1)
    assert body.velocity == pytest.approx([0.2, 0.15, 0.6])


def test_last_move_is_held_about_one_second_then_the_robot_stops():
    body = standing()
    body.request(api.MOVE, {"x": 0.5}, 0.0)
    run(body, 0.9)
    assert body.velocity[0] == pytest.approx(0.5)
    run(body, 1.5)
    assert body.velocity[0] == 0.0 and body.mode == api.MODE_BALANCE_STAND


def test_damp_goes_limp_at_once():
    body = standing()
    body.request(api.MOVE, {"x": 1.0}, 0.0)
    run(body, 0.5)
    assert body.request(api.DAMP, {}, 0.5) == api.OK
    assert body.mode == api.MODE_DAMPING and not np.any(body.velocity)
    assert body.request(api.MOVE, {"x": 1.0}, 0.6) == ERR_REFUSED


def test_pose_follows_the_integrated_commands_when_they_respect_the_acceleration_limits():
    body = standing()
    twists = []
    for k in range(40):  # a Move every 0.1 s: ramp up over 1 s, cruise, ramp down to 0 at 4 s
        t = 0.1 * k
        scale = min(1.0, t, 3.9 - t) if t < 3.9 else 0.0
        twists.append((t, 0.5 * scale, 0.2 * scale, 0.4 * scale))
    for t, vx, vy, wz in twists:
        run(body, t)
        body.request(api.MOVE, {"x": vx, "y": vy, "z": wz}, t)
    run(body, 4.5)
    ref = integrate_twists(twists, 4.5)
    path = sum(math.hypot(vx, vy) for _, vx, vy, _ in twists) * 0.1
    assert math.hypot(body.x - ref[0], body.y - ref[1]) < 0.005 * path
    assert body.yaw == pytest.approx(ref[2], abs=0.005)


def test_speed_level_is_accepted_for_the_vendor_levels_only():
    body = standing()
    assert body.request(api.SPEED_LEVEL, {"data": 1}, 0.0) == api.OK and body.speed_level == 1
    assert body.request(api.SPEED_LEVEL, {"data": 7}, 0.0) == api.ERR_API_PARAMETER
