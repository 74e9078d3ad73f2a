"""Stop sequences against the stand-in devices, healthy, silent and hanging."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchorvla.errors import DeviceError, UserError
from drivers.types import SO101_JOINTS
from onboard.config import ArmConfig
from onboard.devices import build_so101
from onboard.standins import StandinArm, StandinBase
from safety.config import SafetyConfig, StopConfig
from safety.envelope import SafetyLayer
from safety.stop import StopSequences, run_step

N = len(SO101_JOINTS)
DT = 1 / 15


class HangingBase(StandinBase):
    """A base whose RPCs block far longer than any stop step may wait."""

    def stop_move(self) -> None:
        time.sleep(2.0)


class NoDampBase:
    def start(self): ...
    def read_state(self): ...
    def move(self, vx, vy, wz): ...
    def stop_move(self): ...
    def stop(self): ...


class ArmWithoutRelease:
    joint_names = SO101_JOINTS

    def start(self): ...
    def read_state(self): ...
    def write_goal(self, positions): ...
    def stop(self): ...


def rig(stop: StopConfig | None = None, base=None, start=None, period_s=DT):
    arm = StandinArm(SO101_JOINTS, time_constant_s=0.01)
    arm._pos = np.zeros(N) if start is None else np.asarray(start, float).copy()
    arm._goal = arm._pos.copy()
    base = StandinBase() if base is None else base
    layer = SafetyLayer(SafetyConfig(stop=stop or StopConfig()), SO101_JOINTS, period_s)
    layer.seed(arm.read_state())
    return arm, base, layer, StopSequences(layer.config.stop, arm, base, layer, period_s)


def test_safe_stop_sends_move_zero_then_stop_move_and_holds_the_arm():
    arm, base, layer, stops = rig()
    base.move(0.4, 0.0, 0.2)
    report = stops.safe_stop()
    assert report.ok, report.describe()
    assert [s.name for s in report.steps] == ["base_move_zero", "base_stop_move", "arm_hold"]
    assert base.moves[-1] == (0.0, 0.0, 0.0) and base.stop_moves == 1
    np.testing.assert_allclose(arm.goals_written[-1], 0.0)
    assert layer.counters.safe_stops == 1


def test_safe_stop_goes_on_when_the_base_hangs_and_the_arm_is_silent():
    arm, _, _, stops = rig(StopConfig(step_timeout_s=0.1), base=HangingBase())
    arm.silent = True
    t0 = time.monotonic()
    report = stops.safe_stop()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0  # not the 2 s the base blocks for
    by_name = {s.name: s for s in report.steps}
    assert by_name["base_move_zero"].ok
    assert not by_name["base_stop_move"].ok and "timed out" in by_name["base_stop_move"].detail
    assert not by_name["arm_hold"].ok and "no status packet" in by_name["arm_hold"].detail


def test_run_step_reports_errors_without_raising():
    def fail():
        raise DeviceError("gone")

    result = run_step("x", fail, 0.5)
    assert not result.ok and result.detail == "gone"


def test_estop_latches_and_damps_or_stops_the_base():
    arm, base, layer, stops = rig(StopConfig(estop_base="damp"))
    report = stops.estop("operator button")
    assert report.ok and base.damps == 1 and base.stop_moves == 0
    assert layer.faulted and layer.faults[0].name == "operator_estop"
    assert not layer.take_stop_request()  # the e-stop was the reaction
    _, base2, _, stops2 = rig()
    stops2.estop()
    assert base2.stop_moves == 1 and base2.damps == 0


def test_fault_reaction_follows_the_config_and_leaves_the_arm_to_the_fast_loop():
    arm, base, layer, stops = rig(StopConfig(fault_reaction="estop", estop_base="damp"))
    layer.report_fault("servo_overheat", "test", 0)
    report = stops.fault_reaction()
    assert [f.name for f in layer.faults] == ["servo_overheat"]  # no operator e-stop added
    assert report.sequence == "estop" and base.damps == 1
    assert [s.name for s in report.steps] == ["base_damp"] and not arm.goals_written
    _, _, _, stops = rig()
    assert stops.fault_reaction().sequence == "safe_stop"


def test_configurations_a_device_cannot_carry_out_are_refused_up_front():
    layer = SafetyLayer(SafetyConfig(), SO101_JOINTS)
    with pytest.raises(UserError, match="no damp"):
        StopSequences(StopConfig(estop_base="damp"), StandinArm(SO101_JOINTS), NoDampBase(), layer, DT)
    with pytest.raises(UserError, match="cannot release torque"):
        StopSequences(StopConfig(on_exit="park_release"), ArmWithoutRelease(), None, layer, DT)
    with pytest.raises(UserError, match="unknown joints"):
        StopSequences(StopConfig(rest_pose={"elbow": 0.0}), StandinArm(SO101_JOINTS), None, layer, DT)


def test_park_and_release_moves_slowly_to_the_rest_pose_then_releases_torque():
    rest = {"shoulder_lift": -0.2}
    cfg = StopConfig(on_exit="park_release", rest_pose=rest, park_speed=1.0, park_timeout_s=5.0)
    arm, base, _, stops = rig(cfg, start=np.full(N, 0.3), period_s=0.02)
    report = stops.on_exit()
    assert report.ok, report.describe()
    assert [s.name for s in report.steps][-2:] == ["arm_park", "arm_release_torque"]
    assert not arm.torque_enabled and base.stop_moves == 1
    goals = np.array(arm.goals_written)
    assert np.max(np.abs(np.diff(goals, axis=0))) <= 1.0 * 0.02 + 1e-9  # never faster than the park speed
    target = np.zeros(N)
    target[SO101_JOINTS.index("shoulder_lift")] = -0.2
    np.testing.assert_allclose(goals[-1], target, atol=0.03)


def test_park_keeps_torque_on_when_the_arm_stops_answering_or_the_pose_is_not_reached():
    cfg = StopConfig(on_exit="park_release", park_speed=0.05, park_timeout_s=0.3)
    arm, _, _, stops = rig(cfg, start=np.full(N, 0.5), period_s=0.02)
    report = stops.park_and_release()
    assert not report.ok and arm.torque_enabled
    assert "timed out" in report.steps[-2].detail and report.steps[-1].name == "arm_hold"
    arm, _, _, stops = rig(cfg, start=np.full(N, 0.5), period_s=0.02)
    arm.silent = True
    report = stops.park_and_release()
    assert "stopped answering" in report.steps[-2].detail and arm.torque_enabled


def test_park_and_release_on_the_so101_driver_over_the_emulated_servo_bus():
    """The real driver (set_torque) on the pty servo emulator: parked at the rest pose, then torque off."""
    arm = build_so101(ArmConfig(driver="emulated", health_period_s=0.05))
    arm.start()
    try:
        cfg = StopConfig(
            on_exit="park_release", rest_pose={"elbow_flex": 0.2}, park_speed=1.0, park_timeout_s=5.0
        )
        layer = SafetyLayer(SafetyConfig(stop=cfg), arm.joint_names, 0.05)
        layer.seed(arm.read_state())
        report = StopSequences(cfg, arm, None, layer, 0.05).on_exit()
        assert report.ok, report.describe()
        assert all(s.value("Torque_Enable") == 0 for s in arm.emulator.servos)
        elbow = arm.read_state().positions[arm.joint_names.index("elbow_flex")]
        assert elbow == pytest.approx(0.2, abs=cfg.park_tolerance)
    finally:
        arm.stop()


def test_hold_now_writes_the_hold_goal_and_move_zero_on_the_callers_thread_only_once_latched():
    arm, base, layer, stops = rig(start=np.full(N, 0.3))
    base.move(0.4, 0.0, 0.2)
    with pytest.raises(RuntimeError, match="without a latched fault"):
        stops.hold_now()
    assert not arm.goals_written
    layer.report_fault("operator_estop", "test", 0)
    report = stops.hold_now()
    assert report.ok and [s.name for s in report.steps] == ["arm_hold", "base_move_zero"]
    np.testing.assert_allclose(arm.goals_written[-1], 0.3)  # the measured pose: it stops there
    assert base.moves[-1] == (0.0, 0.0, 0.0) and base.stop_moves == 0  # StopMove is the caller's device part
    arm.silent = True
    report = stops.hold_now()  # a silent arm: reported, the Move 0 still goes out
    assert not report.steps[0].ok and report.steps[1].ok


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.lists(st.floats(0.0, 1.0), min_size=N, max_size=N),
    offset=st.lists(st.floats(-0.15, 0.15), min_size=N, max_size=N),
    speed=st.floats(0.5, 2.0),
    silent_after=st.one_of(st.none(), st.integers(0, 10)),
)
def test_park_and_release_whatever_the_pose_speed_and_silence(where, offset, speed, silent_after):
    """StopSequences.park_and_release as a property: every goal it writes passes the envelope's audit at the park
    period; torque is released exactly when the report says the arm reached the rest pose (then it is there),
    and an arm that goes silent part-way keeps its torque."""
    from tools.envelope_audit import EnvelopeAudit

    limits = SafetyLayer(SafetyConfig(), SO101_JOINTS).limits
    lo, hi = np.maximum(limits.soft_lo, -0.6), np.minimum(limits.soft_hi, 0.6)
    start = lo + np.array(where) * (hi - lo)
    rest = np.clip(start + np.array(offset), lo, hi)
    cfg = StopConfig(
        on_exit="park_release",
        rest_pose=dict(zip(SO101_JOINTS, rest.tolist(), strict=True)),
        park_speed=speed,
        park_timeout_s=2.0,
    )
    arm, _, layer, stops = rig(cfg, start=start, period_s=0.01)
    audit = EnvelopeAudit(layer.limits, 0.01)
    audit.check_goal(layer.previous_goal)
    write = arm.write_goal

    def audited(goal):
        if silent_after is not None and len(audit.goals) > silent_after:
            arm.silent = True
        audit.check_goal(goal)
        write(goal)

    arm.write_goal = audited
    report = stops.park_and_release()
    assert not audit.violations, audit.violations[:2]
    released = not arm.torque_enabled
    assert released == report.ok
    if released:
        np.testing.assert_allclose(arm.read_state().positions, rest, atol=cfg.park_tolerance + 1e-6)
    if silent_after is not None and silent_after + 1 < len(audit.goals):
        assert not released
