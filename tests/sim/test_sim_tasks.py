"""The emulated robot's tasks: kinematics of the experts, grasping, success and failure checks, and the scripted
experts finishing each task in lockstep with the in-process emulated devices (servo physics, Go2 velocity model)."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers import robot_model as kin
from drivers.emulated.world import World
from sim.experts import Expert, inverse_kinematics
from sim.lockstep import SimRobot
from sim.tasks import GRIPPER_OPEN, TASKS, start_task, tool_point


@pytest.mark.parametrize(
    "target", [(0.30, 0.05, 0.02), (0.25, -0.10, 0.10), (0.35, 0.0, 0.0), (0.30, 0.0, 0.18)]
)
def test_inverse_kinematics_puts_the_tool_on_the_target_level(target):
    q = inverse_kinematics(np.array(target))
    gripper = kin.forward(q).gripper
    assert np.allclose(gripper[:3, 3], target, atol=1e-6)
    assert abs(gripper[2, 0]) < 1e-6  # the approach axis is level


def test_unknown_task_is_one_clear_line():
    with pytest.raises(UserError, match="task 'fly' unknown"):
        start_task("fly", World(), 0)


def _put_tool_on(world: World, point_world: np.ndarray, gripper: float) -> None:
    q = inverse_kinematics(point_world - np.array([*kin.ARM_MOUNT_ON_BASE, world.base_height]))
    world.set_joints(np.append(q, gripper))


def test_closing_the_gripper_on_the_ball_attaches_it_and_opening_drops_it():
    world = World()
    task = start_task("lift", world, 0)
    ball = world.objects["ball"]
    start = ball.position.copy()
    _put_tool_on(world, start, GRIPPER_OPEN)
    task.update(world)
    assert not ball.held  # open jaws around the ball: not yet
    _put_tool_on(world, start, 0.0)
    task.update(world)
    assert ball.held
    _put_tool_on(world, start + (0.0, 0.0, 0.08), 0.0)
    task.update(world)
    assert np.allclose(ball.position, start + (0.0, 0.0, 0.08), atol=1e-6)  # it follows the tool
    assert task.status(world).success
    _put_tool_on(world, start + (0.0, 0.0, 0.08), GRIPPER_OPEN)
    task.update(world)
    assert not ball.held and not task.status(world).success


def test_closing_the_gripper_away_from_the_ball_catches_nothing():
    world = World()
    task = start_task("lift", world, 0)
    ball = world.objects["ball"]
    _put_tool_on(world, ball.position + (0.0, 0.0, 0.06), GRIPPER_OPEN)
    task.update(world)
    _put_tool_on(world, ball.position + (0.0, 0.0, 0.06), 0.0)
    task.update(world)
    assert not ball.held


def test_reach_fails_when_the_tool_hits_the_obstacle():
    world = World()
    task = start_task("reach", world, 0)
    _put_tool_on(world, world.objects["obstacle"].position, 0.0)
    task.update(world)
    status = task.status(world)
    assert status.failed and not status.success and "obstacle" in status.detail


def test_expert_keeps_its_joint_targets_inside_the_envelopes_soft_limits():
    robot = SimRobot([])
    task = robot.start_episode("reach", 0)
    # The base drifted until the ball sits low and close to the arm: a level gripper cannot get there (the
    # inverse kinematics alone asks wrist_flex beyond its -95 deg limit).
    close_and_low = np.array([0.20, 0.0, -0.05])
    robot.world.objects["ball"].position[:] = close_and_low + np.array(
        [*kin.ARM_MOUNT_ON_BASE, robot.world.base_height]
    )
    robot.world.set_joints(np.append(inverse_kinematics(close_and_low + (0.0, 0.0, 0.02)), 0.0))
    assert inverse_kinematics(close_and_low)[3] < np.radians(-95)
    expert = Expert(task, robot.world, 1 / 15)
    expert.stage = 2  # on the last waypoint: the ball itself
    targets = expert.act()[3:]
    assert np.all(targets >= expert.joint_lo) and np.all(targets <= expert.joint_hi)
    assert targets[3] == pytest.approx(expert.joint_lo[3])  # clipped, not left beyond


@pytest.mark.parametrize("name", TASKS)
def test_expert_finishes_its_task_with_the_emulated_devices(name):
    robot = SimRobot([])
    task = robot.start_episode(name, 7)
    expert = Expert(task, robot.world, 1 / 15)
    dt_ns = round(1e9 / 15)
    start_base = robot.world.base_pose.copy()
    for _ in range(task.max_steps):
        robot.arm.read_state()
        robot.base.read_state()
        action = expert.act()
        robot.arm.write_goal(action[3:])
        robot.base.move(*action[:3])
        robot.clock.advance(dt_ns)
        robot.arm.read_state()
        robot.base.read_state()
        task.update(robot.world)
        if task.status(robot.world).success:
            break
    assert task.status(robot.world).success, task.status(robot.world).detail
    moved = np.linalg.norm(robot.world.base_pose[:2] - start_base[:2])
    assert (moved > 0.3) == (name == "touch")  # only the touch task drives
    tip = tool_point(robot.world.joint_positions, robot.world.base_pose, robot.world.base_height)
    assert np.isfinite(tip).all()


def test_a_labelling_reach_expert_goes_round_on_the_side_the_tool_already_took():
    # Labelling a policy's episode: the task says right (-1), the policy has taken the tool 3 cm out to the
    # left of the ball; the label goes on round the left rather than dragging the tool across the obstacle.
    robot = SimRobot([])
    task = robot.start_episode("reach", 0)
    task.side = -1.0
    goal = task.goal_in_arm_frame(robot.world)
    robot.world.set_joints(np.append(inverse_kinematics(goal + (0.0, 0.03, 0.12)), 0.0))
    assert Expert(task, robot.world, 1 / 15).act()[3] < robot.world.joint_positions[0]  # demonstrating: right
    labelling = Expert(task, robot.world, 1 / 15, follow_side=True)
    labelling.act()
    assert labelling.side == 1.0
    assert labelling.act()[3] > robot.world.joint_positions[0]  # pan on to the left
