"""The SafetyLayer facade the runtime calls: holds, latched faults, chunks, residuals."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import DeviceError
from drivers.types import SO101_JOINTS, ArmState, BaseVelocity, Command
from safety.config import SafetyConfig
from safety.envelope import SafetyLayer

N = len(SO101_JOINTS)
DT = 1 / 15
G = SO101_JOINTS.index("gripper")


def state(positions, t_ns=0, loads=None) -> ArmState:
    return ArmState(t_ns, SO101_JOINTS, np.asarray(positions, float), np.zeros(N), loads=loads)


def command(positions, base=(0.0, 0.0, 0.0), t_ns=0) -> Command:
    return Command(t_ns, SO101_JOINTS, np.asarray(positions, float), BaseVelocity(*base))


def seeded(positions=None) -> SafetyLayer:
    s = SafetyLayer(SafetyConfig(), SO101_JOINTS, DT, 5)
    s.seed(state(np.zeros(N) if positions is None else positions))
    return s


def test_nan_command_holds_and_counts_a_rejection():
    s = seeded()
    cmd = s.filter(command(np.full(N, np.nan), base=(np.inf, 0, 0)), state(np.full(N, 0.01)), DT)
    np.testing.assert_allclose(cmd.arm_positions, 0.01)
    assert cmd.base == BaseVelocity()
    assert s.counters.rejected == 1 and s.counters.clamped == 1


def test_latched_fault_holds_the_pose_of_the_latch_moment_keeps_the_grip_and_stops_the_base():
    s = seeded()
    start = np.full(N, 0.1)
    for _ in range(30):  # walk the goal to 0.1 rad everywhere, the gripper closing on an object
        s.filter(command(start, base=(0.3, 0, 0)), state(start), DT)
    s.report_fault("servo_overheat", "test", 1)
    assert s.take_stop_request() and not s.take_stop_request()
    loads = np.zeros(N)
    loads[G] = 0.5  # the gripper is holding an object

    def measured(k, gripper):
        m = np.full(N, 0.08) - k * 0.01  # the arm sags after the hold began
        m[G] = gripper
        return state(m, loads=loads)

    cmds = [s.filter(command(np.full(N, 1.0), base=(0.5, 0, 0)), measured(k, 0.05), DT) for k in range(10)]
    assert all(c.hold and c.base == BaseVelocity() for c in cmds)
    np.testing.assert_allclose(np.delete(cmds[-1].arm_positions, G), 0.08)  # the pose when the hold began
    assert cmds[-1].arm_positions[G] == pytest.approx(0.1)  # the grip is kept: goal 0.05 past the object
    # An object that gives way further: the goal may lead it by max_squeeze only (the torque cap).
    for k in range(5):
        cmd = s.filter(command(np.zeros(N)), measured(10 + k, -0.1), DT)
    assert cmd.arm_positions[G] == pytest.approx(-0.1 + s.limits.gripper_max_squeeze)


def test_reset_releases_the_hold():
    s = seeded()
    s.report_fault("x", "test", 0)
    assert s.filter(command(np.full(N, 0.01)), state(np.zeros(N)), DT).hold
    s.reset()
    cmd = s.filter(command(np.full(N, 0.01)), state(np.zeros(N)), DT)
    assert not cmd.hold and not s.faulted


def test_same_fault_latches_once():
    s = seeded()
    s.report_fault("arm_comms", "a", 0)
    s.report_fault("arm_comms", "b", 1)
    assert s.counters.faults == 1 and len(s.faults) == 1


def test_non_finite_chunks_are_rejected_and_two_in_a_row_latch():
    s = seeded()
    good = np.zeros((10, 9))
    bad = good.copy()
    bad[3, 4] = np.nan
    assert s.accept_chunk(good, 5)
    assert not s.accept_chunk(bad, 6)
    assert s.accept_chunk(good, 7)  # one bad chunk is skipped; a good one resets the count
    assert not s.accept_chunk(bad, 8) and not s.faulted and s.counters.warnings == 1
    assert not s.accept_chunk(bad, 9)
    assert s.counters.rejected == 3
    assert [(f.name, f.t_ns) for f in s.faults] == [("policy_nonfinite", 9)]


def test_residual_is_capped_per_channel_kind():
    s = seeded()
    channels = ("base.vx", "base.vy", "base.wz", "arm.shoulder_pan")
    capped = s.cap_residual(np.array([1.0, -1.0, 1.0, np.nan]), channels)
    r = s.config.residual
    np.testing.assert_allclose(capped, [r.max_base_linear, -r.max_base_linear, r.max_base_angular, 0.0])
    assert s.counters.clamped == 1


def test_chunk_freshness():
    s = seeded()
    assert s.chunk_fresh(0, int(0.9e9))
    assert not s.chunk_fresh(0, int(1.1e9))


def test_without_a_starting_pose_the_layer_refuses_to_invent_one():
    s = SafetyLayer(SafetyConfig(), SO101_JOINTS)
    with pytest.raises(RuntimeError, match="seed"):
        s.filter(command(np.zeros(N)), None, DT)
    # With a measured state it starts from there (clipped into the soft limits).
    cmd = s.filter(command(s.limits.hard_hi + 0.03), state(s.limits.hard_hi + 0.03), DT)
    np.testing.assert_allclose(cmd.arm_positions, s.limits.soft_hi)


@pytest.mark.parametrize("bad", [np.nan, 10.0])
def test_a_pose_beyond_the_hard_limits_is_refused_at_start(bad):
    s = SafetyLayer(SafetyConfig(), SO101_JOINTS)
    pose = np.zeros(N)
    pose[2] = bad
    with pytest.raises(DeviceError, match="elbow_flex .* calibration"):
        s.seed(state(pose))


def test_park_moves_toward_the_rest_pose_at_the_park_speed_even_while_faulted():
    s = seeded(np.full(N, 0.3))
    s.report_fault("servo_overheat", "test", 0)
    cmd = s.park(np.zeros(N), state(np.full(N, 0.3)), DT, speed=0.3)
    np.testing.assert_allclose(cmd.arm_positions, 0.3 - 0.3 * DT)
