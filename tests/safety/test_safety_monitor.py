"""Health and staleness monitors through the SafetyLayer facade: each fault latches, warnings do not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from drivers.types import SO101_JOINTS, ArmState, BaseState, BaseVelocity, Command, Frame
from safety.config import SafetyConfig
from safety.envelope import SafetyLayer
from safety.monitor import describe_bits

N = len(SO101_JOINTS)
P = 66_666_667  # one tick at 15 Hz, ns


def healthy(t_ns: int, positions=None, velocities=None) -> ArmState:
    return ArmState(
        t_ns,
        SO101_JOINTS,
        np.zeros(N) if positions is None else np.asarray(positions, float),
        np.zeros(N) if velocities is None else np.asarray(velocities, float),
        loads=np.full(N, 0.1),
        temperatures_c=np.full(N, 35.0),
        voltages_v=np.full(N, 12.0),
        error_bits=np.zeros(N, dtype=np.int64),
        health_t_ns=t_ns,
    )


def base_state(t_ns: int) -> BaseState:
    return BaseState(t_ns, np.zeros(3), 0.0, np.zeros(3), 0.0)


def layer() -> SafetyLayer:
    s = SafetyLayer(SafetyConfig(), SO101_JOINTS, P / 1e9, 5)
    s.seed(healthy(0))
    return s


def with_joint(arr_name: str, value, joint="elbow_flex", t_ns=P) -> ArmState:
    arm = healthy(t_ns)
    arr = getattr(arm, arr_name).copy()
    arr[SO101_JOINTS.index(joint)] = value
    return replace(arm, **{arr_name: arr})


def fault_names(s: SafetyLayer) -> list[str]:
    return [f.name for f in s.faults]


def test_healthy_ticks_raise_nothing():
    s = layer()
    for k in range(1, 20):
        s.observe(
            k * P,
            healthy(k * P),
            base_state(k * P),
            {"wrist": Frame(k * P, "wrist", np.zeros((1, 1, 3), np.uint8))},
        )
    assert not s.faulted and s.counters.warnings == 0


@pytest.mark.parametrize(
    ("field", "value", "fault", "warning"),
    [
        ("temperatures_c", 68.0, "servo_overheat", None),
        ("temperatures_c", 58.0, None, "servo_warm"),
        ("voltages_v", 5.5, "servo_voltage", None),
        ("voltages_v", 14.0, "servo_voltage", None),
        ("voltages_v", 6.3, None, "servo_voltage_low"),
        ("error_bits", 4, "servo_error", None),
        ("error_bits", 2, None, "servo_status"),
        ("loads", 0.8, None, "servo_load_high"),
    ],
)
def test_servo_health_thresholds(field, value, fault, warning):
    s = layer()
    s.observe(P, with_joint(field, value))
    assert fault_names(s) == ([fault] if fault else [])
    assert s.counters.warnings == (1 if warning else 0)
    if fault:
        assert "elbow_flex" in s.faults[0].detail


def test_overload_latches_after_consecutive_ticks_only():
    s = layer()
    s.observe(P, with_joint("loads", -0.95, t_ns=P))
    s.observe(2 * P, healthy(2 * P))  # a one-tick spike (accelerating) is not an overload
    s.observe(3 * P, with_joint("loads", -0.95, t_ns=3 * P))
    assert not s.faulted
    s.observe(4 * P, with_joint("loads", -0.95, t_ns=4 * P))
    assert fault_names(s) == ["servo_overload"]


def test_stalled_joint_far_from_its_goal_latches_but_a_holding_gripper_does_not():
    s = layer()
    goal = np.zeros(N)
    goal[1] = goal[SO101_JOINTS.index("gripper")] = 0.1
    s.filter(
        Command(0, SO101_JOINTS, goal, BaseVelocity()), healthy(0), 1.0
    )  # dt 1 s: no rate limit in the way
    for k in (1, 2):
        s.observe(k * P, healthy(k * P))
    assert fault_names(s) == ["joint_stalled"]
    assert "shoulder_lift" in s.faults[0].detail


def test_a_moving_joint_is_not_stalled():
    s = layer()
    goal = np.zeros(N)
    goal[1] = 0.1
    s.filter(Command(0, SO101_JOINTS, goal, BaseVelocity()), healthy(0), 1.0)
    for k in (1, 2, 3):
        s.observe(k * P, healthy(k * P, velocities=np.full(N, 0.5)))
    assert not s.faulted


def test_stale_arm_and_base_states_are_comms_loss():
    s = layer()
    s.observe(10 * P, healthy(10 * P), base_state(10 * P - int(0.15e9)))
    assert fault_names(s) == ["base_comms"]
    s = layer()
    s.observe(10 * P, healthy(10 * P - int(0.15e9)))
    assert fault_names(s) == ["arm_comms"]


def test_comms_failures_latch_after_consecutive_failures_and_a_fresh_read_resets_the_count():
    s = layer()
    s.comms_failed("arm", "no status packet", P)
    s.observe(2 * P, healthy(2 * P))
    s.comms_failed("arm", "no status packet", 3 * P)
    assert not s.faulted
    s.comms_failed("arm", "no status packet", 3 * P)
    assert fault_names(s) == ["arm_comms"] and "2 in a row" in s.faults[0].detail


def test_a_failed_base_read_latches_at_once():
    s = layer()
    s.comms_failed("base", "Go2 state is 0.120 s old", P)
    assert fault_names(s) == ["base_comms"]


def frame(t_ns: int) -> dict[str, Frame]:
    return {"wrist": Frame(t_ns, "wrist", np.zeros((1, 1, 3), np.uint8))}


def test_stale_camera_frames_hold_while_they_last_then_motion_resumes():
    s = layer()
    move = Command(0, SO101_JOINTS, np.full(N, 0.01), BaseVelocity(0.1, 0, 0))
    s.observe(10 * P, healthy(10 * P), None, frame(10 * P - int(0.2e9)))
    assert (
        not s.faulted
        and list(s.conditions) == ["camera_stale"]
        and "wrist" in s.conditions["camera_stale"].detail
    )
    held = s.filter(move, healthy(10 * P), P / 1e9)
    assert held.hold and held.base == BaseVelocity()
    s.observe(11 * P, healthy(11 * P), None, frame(11 * P))  # the stream is back
    assert not s.conditions and s.counters.holds == 1
    assert not s.filter(move, healthy(11 * P), P / 1e9).hold


def test_stale_camera_frames_latch_when_configured_to():
    config = SafetyConfig.model_validate({"staleness": {"frame_reaction": "fault"}})
    s = SafetyLayer(config, SO101_JOINTS, P / 1e9, 5)
    s.seed(healthy(0))
    s.observe(10 * P, healthy(10 * P), None, frame(10 * P - int(0.2e9)))
    assert fault_names(s) == ["camera_stale"] and not s.conditions


def test_inference_running_longer_than_the_executed_chunk_latches():
    s = layer()  # 5 actions at 15 Hz: 333 ms
    s.inference_started(0)
    s.observe(4 * P, healthy(4 * P))
    assert not s.faulted
    s.observe(6 * P, healthy(6 * P))
    assert fault_names(s) == ["inference_overrun"]
    s2 = layer()
    s2.inference_started(0)
    s2.inference_finished()
    s2.observe(10 * P, healthy(10 * P))
    assert not s2.faulted


def test_faults_latch_until_reset_and_a_lasting_condition_latches_again():
    s = layer()
    s.observe(P, with_joint("temperatures_c", 70.0))
    s.observe(2 * P, healthy(2 * P))  # cooled down: still latched
    assert s.faulted and s.counters.faults == 1
    s.reset()
    assert not s.faulted
    s.observe(3 * P, with_joint("temperatures_c", 70.0, t_ns=3 * P))
    assert s.faulted and s.counters.faults == 2


def test_error_bits_are_named():
    assert describe_bits(4 | 32) == "overheat+overload"
    assert describe_bits(0x40) == "0x40"


def test_a_measured_joint_beyond_its_hard_limit_latches():
    s = layer()
    s.observe(P, with_joint("positions", 2.5, joint="shoulder_pan"))
    assert fault_names(s) == ["joint_out_of_range"] and "calibration" in s.faults[0].detail
