"""The SO-101 leader arm through the real driver on an emulated bus (a second pty): torque off, read through its
own calibration, never written; the follower's goal is the same joint angles, the gripper mapped range to range."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import DeviceError
from drivers.emulated.so101 import EmulatedSO101Leader
from drivers.feetech.calibration import ArmCalibration, JointCalibration, default_calibration


def test_leader_starts_limp_and_reads_where_the_hand_puts_it():
    leader = EmulatedSO101Leader(default_calibration())
    leader.start()
    try:
        assert all(s.value("Torque_Enable") == 0 for s in leader.emulator.servos)
        hand = np.array([0.3, -0.5, 0.4, 0.2, -0.1, 0.8])
        leader.move_by_hand(hand)
        assert np.allclose(leader.read_state().positions, hand, atol=2e-3)
        with pytest.raises(DeviceError, match="moved by hand"):
            leader.write_goal(hand)
        assert all(s.value("Torque_Enable") == 0 for s in leader.emulator.servos)
    finally:
        leader.stop()


def test_follower_goal_keeps_joint_angles_and_maps_the_gripper_by_fraction_of_range():
    leader_cal = default_calibration()
    follower = dict(default_calibration().joints)
    follower["gripper"] = JointCalibration(id=6, homing_offset=0, range_min=2000, range_max=3000)
    follower_cal = ArmCalibration(follower)
    leader = EmulatedSO101Leader(leader_cal)  # not started: the mapping needs only the calibrations
    lo, hi = leader_cal.limits_rad()
    f_lo, f_hi = follower_cal.limits_rad()
    pose = np.array([0.3, -0.5, 0.4, 0.2, -0.1, lo[5] + 0.25 * (hi[5] - lo[5])])
    goal = leader.follower_goal(pose, follower_cal)
    assert np.allclose(goal[:5], pose[:5])
    assert goal[5] == pytest.approx(f_lo[5] + 0.25 * (f_hi[5] - f_lo[5]))
    beyond = leader.follower_goal(np.r_[pose[:5], hi[5] + 1.0], follower_cal)
    assert beyond[5] == pytest.approx(f_hi[5])  # clamped to the follower's range
