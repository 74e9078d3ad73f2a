"""One world state behind the emulated arm, base and cameras.

The servo-bus emulator writes the arm's joint positions, the Go2 emulator writes the base pose, the
synthetic cameras render from both plus the task objects. Emulators run in their own threads (or
processes that share one through a library call), so every access goes through `lock`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from drivers.types import SO101_JOINTS


@dataclass
class WorldObject:
    name: str
    position: np.ndarray  # (3,) world frame, m
    radius: float = 0.03
    color: tuple[int, int, int] = (220, 40, 40)
    held: bool = False  # attached to the gripper


@dataclass
class World:
    joint_names: tuple[str, ...] = SO101_JOINTS
    joint_positions: np.ndarray = field(default_factory=lambda: np.zeros(len(SO101_JOINTS)))  # rad
    base_pose: np.ndarray = field(
        default_factory=lambda: np.zeros(3)
    )  # x, y (m), yaw (rad) in the world frame
    base_height: float = 0.30  # m, top of the Go2 body where the arm is mounted
    objects: dict[str, WorldObject] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, dict[str, WorldObject]]:
        """Copies of (joint positions, base pose, objects), consistent with each other."""
        with self.lock:
            objects = {
                k: WorldObject(o.name, o.position.copy(), o.radius, o.color, o.held)
                for k, o in self.objects.items()
            }
            return self.joint_positions.copy(), self.base_pose.copy(), objects

    def set_joints(self, positions: np.ndarray) -> None:
        with self.lock:
            self.joint_positions[:] = positions

    def set_base_pose(self, x: float, y: float, yaw: float) -> None:
        with self.lock:
            self.base_pose[:] = (x, y, yaw)
