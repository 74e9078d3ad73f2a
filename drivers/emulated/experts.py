"""Scripted experts for the emulated tasks (drivers/emulated/tasks.py): they read the world's truth and return
the action the policy learns, `[base.vx, base.vy, base.wz, arm.<joint>...]` (body-frame m/s, rad/s; joint
targets in rad).

The arm is driven in Cartesian space: each tick the tool centre's target steps from where the tool is now
towards the current waypoint at `TOOL_SPEED`, and inverse kinematics (the gripper kept level) turns it into
joint targets. The experts react to the measured state only (no hidden stage), so demonstrations recorded with
noise added to the executed action show how to recover, and a policy can learn the rule from any pose.
"""

from __future__ import annotations

import math

import numpy as np

from drivers.emulated import kinematics as kin
from drivers.emulated.tasks import GRIPPER_CLOSED, GRIPPER_OPEN, LIFT_HEIGHT, Task, world_to_arm
from drivers.emulated.world import World

TOOL_SPEED = 0.22  # m/s of the tool centre's target
DRIVE_SPEED = 0.45  # m/s, under the safety envelope's max_vx (0.6)
TURN_GAIN = 2.0  # rad/s per rad of heading error
STANDOFF_X = 0.30  # m: the base stops when the marker is this far ahead of the arm's plate
GRIPPER_SHUT = 0.0  # rad
REACH_CLEARANCE = 0.065  # m from the obstacle's centre the reach expert keeps (touching it: 0.0375)
REACH_FINAL = 0.03  # m beside the ball's centre: the tool is within the task's touch distance there
REACH_SIDE_OFFSET = 0.12  # m beside the ball where the reach expert goes round the obstacle
PREGRASP_BACK = 0.06  # m behind the ball (towards the arm) where the lift expert starts its approach
CLOSE_WITHIN = 0.02  # m of the ball's centre where the lift expert closes (closing jaws catch within 0.04)


def inverse_kinematics(tool_arm: np.ndarray, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Joint angles (pan, lift, elbow, wrist_flex, wrist_roll) putting the tool centre at `tool_arm` (arm base
    frame) with the gripper pitched `pitch` rad down from level; the elbow-up solution. Out-of-reach targets
    give the stretched-out arm pointing at them."""
    x, y, z = (float(v) for v in tool_arm)
    pan = math.atan2(y, x)
    r = math.hypot(x, y)
    tool_len = kin.WRIST_TO_ROLL + kin.ROLL_TO_GRIPPER
    # In the arm's vertical plane: u forward, v down, angles measured from u towards v.
    wu = r - tool_len * math.cos(pitch)
    wv = -(z - kin.BASE_TO_PAN) + tool_len * math.sin(pitch)
    l1, l2 = kin.UPPER_ARM, kin.FOREARM
    d = min(math.hypot(wu, wv), l1 + l2 - 1e-6)
    bend = math.acos(max(-1.0, min(1.0, (d * d - l1 * l1 - l2 * l2) / (2 * l1 * l2))))
    upper = math.atan2(wv, wu) - math.atan2(l2 * math.sin(bend), l1 + l2 * math.cos(bend))
    forearm = upper + bend
    lift = upper + math.pi / 2
    elbow = forearm - lift
    flex = pitch - forearm
    return np.array([pan, lift, elbow, flex, roll])


class Expert:
    """The scripted demonstrator of one task episode."""

    def __init__(self, task: Task, world: World, dt_s: float):
        self.task, self.world, self.dt_s = task, world, dt_s

    def _state(self):
        with self.world.lock:
            joints = self.world.joint_positions.copy()
            held = self.world.objects[self.task.goal].held
        goal = self.task.goal_in_arm_frame(self.world)
        tip = kin.forward(joints).gripper[:3, 3]
        return joints, goal, tip, held

    def _obstacle_in_arm_frame(self) -> np.ndarray:
        with self.world.lock:
            position = self.world.objects[self.task.obstacle].position
            return world_to_arm(position, self.world.base_pose, self.world.base_height)

    def _arm_toward(self, tip: np.ndarray, waypoint: np.ndarray, gripper: float) -> np.ndarray:
        step = waypoint - tip
        distance = float(np.linalg.norm(step))
        limit = TOOL_SPEED * self.dt_s
        target = waypoint if distance <= limit else tip + step * (limit / distance)
        return np.append(inverse_kinematics(target), gripper)

    def act(self) -> np.ndarray:
        """The action for now: [base.vx, base.vy, base.wz, joint targets...]."""
        joints, goal, tip, held = self._state()
        base_cmd = np.zeros(3)
        if self.task.name == "touch":
            arm_cmd, base_cmd = self._touch(goal, tip)
        elif self.task.name == "reach":
            arm_cmd = self._reach(goal, tip, self._obstacle_in_arm_frame())
        else:
            arm_cmd = self._lift(
                goal, tip, held, gripper=float(joints[self.world.joint_names.index("gripper")])
            )
        return np.concatenate([base_cmd, arm_cmd])

    def _touch(self, goal: np.ndarray, tip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heading = math.atan2(goal[1], goal[0])
        ahead = goal[0] - STANDOFF_X
        if ahead > 0.02 or abs(heading) > 0.15:
            # Drive: turn towards the marker, slow down on arrival and while the heading is off.
            vx = DRIVE_SPEED * min(1.0, max(0.0, ahead) / 0.4) * max(0.0, math.cos(heading)) ** 4
            base = np.array([vx, 0.0, TURN_GAIN * heading])
            ready = np.array([0.25, 0.0, goal[2] + 0.06])  # carry the arm raised, ahead
            return self._arm_toward(tip, ready, GRIPPER_SHUT), base
        return self._arm_toward(tip, goal, GRIPPER_SHUT), np.zeros(3)

    def _reach(self, goal: np.ndarray, tip: np.ndarray, obstacle: np.ndarray) -> np.ndarray:
        """Around the obstacle on one side: towards the first of (the ball's side `REACH_FINAL` from its centre,
        where the task counts it touched; a point beside the ball, a little below it; the same point higher up)
        whose straight line from the tool keeps `REACH_CLEARANCE` from the obstacle. The side is the one the tool
        is already on, else the episode's. A rule of the measured state only, so a policy can learn it from any
        pose, and moving along a line that was clear keeps it clear (no switching back and forth)."""
        offset = tip[1] - goal[1]
        side = math.copysign(1.0, offset) if abs(offset) > 0.03 else self.task.side
        waypoints = [
            goal + (0.0, side * REACH_FINAL, 0.0),
            goal + (0.0, side * REACH_SIDE_OFFSET, -0.01),
            goal + (0.0, side * REACH_SIDE_OFFSET, 0.12),
        ]
        clear = [w for w in waypoints if _segment_distance(obstacle, tip, w) >= REACH_CLEARANCE]
        return self._arm_toward(tip, clear[0] if clear else waypoints[-1], GRIPPER_SHUT)

    def _lift(self, goal: np.ndarray, tip: np.ndarray, held: bool, gripper: float) -> np.ndarray:
        """Approach the ball level from behind (open jaws), close within `CLOSE_WITHIN`, lift once held; a
        missed grasp (jaws shut, nothing held) opens again. A rule of the measured state only."""
        if held:
            lifted = self.task.start_goal_position[2] + LIFT_HEIGHT + 0.03
            with self.world.lock:
                target = world_to_arm(
                    np.array([*self.task.start_goal_position[:2], lifted]),
                    self.world.base_pose,
                    self.world.base_height,
                )
            return self._arm_toward(tip, target, GRIPPER_SHUT)
        behind = goal[0] - tip[0]
        in_corridor = -0.01 <= behind <= 0.09 and float(np.linalg.norm(goal[1:] - tip[1:])) < 0.02
        target = goal if in_corridor else goal - (PREGRASP_BACK, 0.0, 0.0)
        close = float(np.linalg.norm(goal - tip)) < CLOSE_WITHIN and gripper > GRIPPER_CLOSED
        return self._arm_toward(tip, target, GRIPPER_SHUT if close else GRIPPER_OPEN)


def _segment_distance(point: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """Distance from `point` to the segment start..end."""
    along = end - start
    t = float(np.clip(np.dot(point - start, along) / max(float(np.dot(along, along)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - (start + t * along)))
