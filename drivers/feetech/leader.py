"""The SO-101 leader arm: the same six STS3215 on a second bus, torque off, moved by the operator's hand.

LeRobot's leader convention: the leader is read every tick through its OWN calibration (homing at mid-range), and
the follower is sent the same joint angles (LeRobot's `use_degrees` mode), except the gripper: the leader's
handle travels another range than the follower's jaw, so it maps as a fraction of the leader's range onto the
follower's (LeRobot's 0..100 gripper normalization). `follower_goal` does that mapping.
"""

from __future__ import annotations

import numpy as np

from anchorvla.errors import DeviceError
from drivers.feetech.calibration import ArmCalibration
from drivers.feetech.so101 import SO101Arm


class SO101Leader(SO101Arm):
    """Reads like the follower (`read_state`); `start` leaves torque off; it never takes a goal."""

    def start(self) -> None:
        self.open_checked()
        try:
            self.set_torque(False)
        except BaseException:
            self.bus.close()
            raise

    def write_goal(self, positions: np.ndarray) -> None:
        raise DeviceError("the leader arm is moved by hand: it takes no goal positions")

    def follower_goal(self, positions: np.ndarray, follower: ArmCalibration) -> np.ndarray:
        """The follower's goal (rad, layout `joint_names`) for the leader at `positions` (rad)."""
        goal = np.asarray(positions, dtype=np.float64).copy()
        if "gripper" in self.joint_names and "gripper" in follower.joints:
            k = self.joint_names.index("gripper")
            lead_lo, lead_hi = _joint_limits(self._cal, "gripper")
            foll_lo, foll_hi = _joint_limits(follower, "gripper")
            fraction = np.clip((goal[k] - lead_lo) / (lead_hi - lead_lo), 0.0, 1.0)
            goal[k] = foll_lo + fraction * (foll_hi - foll_lo)
        return goal


def _joint_limits(calibration: ArmCalibration, joint: str) -> tuple[float, float]:
    lower, upper = calibration.limits_rad()
    k = calibration.joint_names.index(joint)
    return float(lower[k]), float(upper[k])
