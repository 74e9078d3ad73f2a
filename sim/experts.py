"""Scripted experts for the emulated tasks (sim/tasks.py): they read the world's truth and return
the action the policy learns, `[base.vx, base.vy, base.wz, arm.<joint>...]` (body-frame m/s, rad/s; joint
targets in rad).

The arm is driven in Cartesian space: each tick the tool centre's target steps from where the tool is now
towards the current waypoint at `TOOL_SPEED`, and inverse kinematics (the gripper kept level) turns it into
joint targets, kept inside the safety envelope's soft joint limits: a target the arm cannot take (a goal the
base's drift brought too close or too low for a level gripper) is demonstrated as the nearest one the envelope
passes, which is what the arm executes anyway, so the policy does not learn commands the envelope must clamp.
The experts react to the measured state only (plus the waypoint they are on), so demonstrations recorded with
noise added to the executed action show how to recover.
"""

from __future__ import annotations

import math

import numpy as np

from drivers import robot_model as kin
from drivers.emulated.world import World
from safety.config import SafetyConfig
from safety.limits import Limits
from sim.tasks import GRIPPER_OPEN, LIFT_HEIGHT, Task, world_to_arm

TOOL_SPEED = 0.22  # m/s of the tool centre's target
WAYPOINT_REACHED = 0.012  # m
DRIVE_SPEED = 0.45  # m/s, under the safety envelope's max_vx (0.6)
TURN_GAIN = 2.0  # rad/s per rad of heading error
STANDOFF_X = 0.30  # m: the base stops when the marker is this far ahead of the arm's plate
GRIPPER_SHUT = 0.0  # rad
SIDE_TAKEN = 0.02  # m: a labelling reach expert takes the side the tool is this far out on (see `Expert`)


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
    """The scripted demonstrator of one task episode.

    `follow_side`: the expert labels an episode someone else drives (a policy, `anchorvla sim record --policy`).
    Reach can be done on either side, so until its first waypoint it goes round on the side the tool is already
    on, once the tool is `SIDE_TAKEN` out to one side of the ball, rather than dragging it across to the
    task's side."""

    def __init__(self, task: Task, world: World, dt_s: float, follow_side: bool = False):
        self.task, self.world, self.dt_s = task, world, dt_s
        self.stage = 0  # index into the task's waypoint list
        self.side = task.side
        self.follow_side = follow_side
        limits = Limits.from_config(SafetyConfig(), world.joint_names)
        self.joint_lo, self.joint_hi = limits.soft_lo, limits.soft_hi

    def _state(self):
        with self.world.lock:
            joints = self.world.joint_positions.copy()
            held = self.world.objects[self.task.goal].held
        goal = self.task.goal_in_arm_frame(self.world)
        tip = kin.forward(joints).gripper[:3, 3]
        return joints, goal, tip, held

    def _arm_toward(self, tip: np.ndarray, waypoint: np.ndarray, gripper: float) -> np.ndarray:
        step = waypoint - tip
        distance = float(np.linalg.norm(step))
        limit = TOOL_SPEED * self.dt_s
        target = waypoint if distance <= limit else tip + step * (limit / distance)
        return np.clip(np.append(inverse_kinematics(target), gripper), self.joint_lo, self.joint_hi)

    def act(self) -> np.ndarray:
        """The action for now: [base.vx, base.vy, base.wz, joint targets...]."""
        joints, goal, tip, held = self._state()
        base_cmd = np.zeros(3)
        if self.task.kind == "touch":
            arm_cmd, base_cmd = self._touch(goal, tip)
        elif self.task.kind == "reach":
            arm_cmd = self._reach(goal, tip)
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

    def _reach(self, goal: np.ndarray, tip: np.ndarray) -> np.ndarray:
        lateral = float(tip[1] - goal[1])
        if self.follow_side and self.stage == 0 and abs(lateral) > SIDE_TAKEN:
            self.side = math.copysign(1.0, lateral)
        side = self.side
        waypoints = [goal + (0.0, side * 0.10, 0.11), goal + (0.0, side * 0.10, 0.0), goal]
        if self.stage < 2 and np.linalg.norm(waypoints[self.stage] - tip) < WAYPOINT_REACHED:
            self.stage += 1
        return self._arm_toward(tip, waypoints[self.stage], GRIPPER_SHUT)

    def _lift(self, goal: np.ndarray, tip: np.ndarray, held: bool, gripper: float) -> np.ndarray:
        if held:
            lifted = self.task.start_goal_position[2] + LIFT_HEIGHT + 0.03
            with self.world.lock:
                target = world_to_arm(
                    np.array([*self.task.start_goal_position[:2], lifted]),
                    self.world.base_pose,
                    self.world.base_height,
                )
            return self._arm_toward(tip, target, GRIPPER_SHUT)
        pregrasp = goal - (0.06, 0.0, 0.0)
        if (
            self.stage == 0
            and np.linalg.norm(pregrasp - tip) < WAYPOINT_REACHED
            and gripper > GRIPPER_OPEN - 0.1
        ):
            self.stage = 1
        if self.stage == 0:
            return self._arm_toward(tip, pregrasp, GRIPPER_OPEN)
        close = np.linalg.norm(goal - tip) < WAYPOINT_REACHED
        return self._arm_toward(tip, goal, GRIPPER_SHUT if close else GRIPPER_OPEN)
