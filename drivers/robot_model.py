"""SO-101 forward kinematics, simplified from the URDF's link offsets (FACTS.md), and where the arm sits on the Go2.

Arm base frame: origin at the arm's mounting plate, x forward, y left, z up. The chain (every pitch joint
turns about its link's y axis, a positive angle tips the next link forward/down):

    shoulder_pan   about z, 0.0624 m above the plate
    shoulder_lift  about y at the pan joint; the upper arm (0.116 m) points up (+z) at zero
    elbow_flex     about y; the forearm (0.135 m) points forward (+x) at zero
    wrist_flex     about y; 0.064 m to the wrist roll
    wrist_roll     about the link's x axis; the gripper frame is 0.098 m further along x
    gripper        opening only: it does not move the gripper frame

At all-zero the arm is an upright "L" with the gripper pointing forward. The real URDF has small lateral
offsets and tilted joint axes; they are left out (a few centimetres), which is enough for the synthetic cameras
and the emulated grasp checks. The gripper frame's x axis is the approach direction, z is "up" at zero roll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BASE_TO_PAN = 0.0624
UPPER_ARM = 0.116
FOREARM = 0.135
WRIST_TO_ROLL = 0.064
ROLL_TO_GRIPPER = 0.098
ARM_MOUNT_ON_BASE = (0.10, 0.0)  # m: the arm's plate on top of the Go2 body, ahead of its centre


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pose(rotation: np.ndarray, translation) -> np.ndarray:
    """A 4x4 homogeneous transform."""
    t = np.eye(4)
    t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


@dataclass(frozen=True)
class ArmPoses:
    """Poses along the chain, as 4x4 transforms in the frame the forward kinematics was asked for."""

    frames: dict[
        str, np.ndarray
    ]  # "plate" (the arm base frame), then the frame at each joint, in chain order
    gripper: np.ndarray  # the gripper frame (tool centre)

    def points(self) -> np.ndarray:
        """(N, 3) positions from the plate to the gripper frame: the arm drawn as a polyline."""
        return np.array([*(t[:3, 3] for t in self.frames.values()), self.gripper[:3, 3]])


def forward(joint_positions, root: np.ndarray | None = None) -> ArmPoses:
    """Forward kinematics for (pan, lift, elbow, wrist_flex, wrist_roll[, gripper]) in rad.

    `root` is the arm base frame's pose (4x4) in the frame wanted for the result (identity: arm base frame).
    """
    q = np.asarray(joint_positions, dtype=np.float64)
    pan, lift, elbow, flex, roll = q[:5]
    t = np.eye(4) if root is None else np.asarray(root, dtype=np.float64)
    frames = {"plate": t}
    frames["shoulder_pan"] = t = t @ pose(rot_z(pan), (0, 0, BASE_TO_PAN))
    frames["shoulder_lift"] = t = t @ pose(rot_y(lift), (0, 0, 0))
    frames["elbow_flex"] = t = t @ pose(rot_y(elbow), (0, 0, UPPER_ARM))
    frames["wrist_flex"] = t = t @ pose(rot_y(flex), (FOREARM, 0, 0))
    frames["wrist_roll"] = t = t @ pose(rot_x(roll), (WRIST_TO_ROLL, 0, 0))
    gripper = t @ pose(np.eye(3), (ROLL_TO_GRIPPER, 0, 0))
    return ArmPoses(frames, gripper)


def arm_root_in_world(base_pose, base_height: float, mount_xy=ARM_MOUNT_ON_BASE) -> np.ndarray:
    """The arm base frame in the world, from the Go2's planar pose (x, y, yaw) and the height of its top plate."""
    x, y, yaw = (float(v) for v in base_pose)
    c, s = math.cos(yaw), math.sin(yaw)
    mx, my = mount_xy
    return pose(rot_z(yaw), (x + c * mx - s * my, y + s * mx + c * my, base_height))
