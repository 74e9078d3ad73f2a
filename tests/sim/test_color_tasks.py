"""The colour tasks (issue 22): no goal in the proprio, two targets of different colours in view, the instruction
naming one; the scripted experts go to the named one, `sim record` records them without goal.* channels."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.cli import main as cli_main
from drivers.emulated.world import World
from policy_runtime.dataset import load_dataset
from sim.experts import Expert, inverse_kinematics
from sim.lockstep import SimRobot
from sim.record import PROPRIO_NO_GOAL
from sim.tasks import COLOR_TASKS, COLORS, start_task, task_names

SEEDS = range(5)


def run_expert(robot: SimRobot, task) -> bool:
    expert = Expert(task, robot.world, 1 / 15)
    for _ in range(task.max_steps):
        robot.arm.read_state()
        robot.base.read_state()
        action = expert.act()
        robot.arm.write_goal(action[3:])
        robot.base.move(*action[:3])
        robot.clock.advance(round(1e9 / 15))
        robot.arm.read_state()
        robot.base.read_state()
        task.update(robot.world)
        status = task.status(robot.world)
        if status.success or status.failed:
            break
    return status.success


def test_colour_tasks_have_two_targets_and_no_goal_in_the_proprio():
    assert task_names("color") == list(COLOR_TASKS)
    for name in COLOR_TASKS:
        named = set()
        for seed in SEEDS:
            world = World()
            task = start_task(name, world, seed)
            assert not task.goal_in_proprio and task.distractor not in (None, task.goal)
            colours = {task.colors[task.goal], task.colors[task.distractor]}
            assert colours == set(COLORS)
            assert world.objects[task.goal].color == COLORS[task.colors[task.goal]]
            assert f"the {task.colors[task.goal]} " in task.instruction
            assert f"the {task.colors[task.distractor]} " not in task.instruction
            gap = world.objects[task.goal].position[:2] - world.objects[task.distractor].position[:2]
            assert np.linalg.norm(gap) > 0.1  # apart: reaching one is not reaching the other
            named.add(task.colors[task.goal])
        assert named == set(COLORS)  # the seed decides which one is named


@pytest.mark.parametrize("name", COLOR_TASKS)
def test_both_targets_are_in_view_at_the_start(name):
    for seed in SEEDS:
        robot = SimRobot([(v, v, 96, 96, 15) for v in ("third_person", "wrist")])
        task = robot.start_episode(name, seed)
        images = [cam.latest().image.astype(int) for cam in robot.cameras]
        for target in (task.goal, task.distractor):
            colour = np.array(robot.world.objects[target].color)
            # The sphere shading scales the colour by 0.55..1: match its hue, not its value.
            seen = sum(
                int(np.sum(np.all(np.abs(img / np.maximum(img.max(-1, keepdims=True), 1) - colour / colour.max())
                                  < 0.12, axis=-1) & (img.max(-1) > 80)))
                for img in images
            )  # fmt: skip
            assert seen >= 5, (name, seed, target, seen)


@pytest.mark.parametrize("name", COLOR_TASKS)
@pytest.mark.parametrize("other", [False, True])
def test_the_expert_goes_to_the_named_target(name, other):
    done = 0
    for seed in SEEDS:
        robot = SimRobot([])
        task = robot.start_episode(name, seed)
        if other:
            first = task.goal
            task.name_other(robot.world)
            assert task.distractor == first and f"the {task.colors[task.goal]} " in task.instruction
        done += run_expert(robot, task)
    assert done >= len(SEEDS) - 1


def test_after_name_other_the_first_target_is_no_success():
    robot = SimRobot([])
    task = robot.start_episode("reach_color", 0)
    first = task.goal
    assert task.status(robot.world).success is False
    robot.world.set_joints(
        np.append(inverse_kinematics(_arm_frame(robot, robot.world.objects[first].position)), 0.0)
    )
    assert task.status(robot.world).success  # the tool on the named ball
    task.name_other(robot.world)
    assert not task.status(robot.world).success
    task.name_other(robot.world)  # back: the same pose now touches the named target
    assert task.status(robot.world).success


def _arm_frame(robot, point):
    from sim.tasks import world_to_arm

    return world_to_arm(point, robot.world.base_pose, robot.world.base_height)


def test_record_colour_tasks_without_goal_channels(tmp_path, capsys):
    out = tmp_path / "demos"
    args = ["sim", "record", "--task", "reach_color,lift_color", "--episodes", "1", "--out", str(out)]
    assert cli_main([*args, "--image-size", "40"]) == 0
    data = load_dataset(out, horizon=8)
    assert data.proprio_layout == PROPRIO_NO_GOAL
    assert not any(c.startswith("goal.") for c in data.proprio_layout)
    assert all(" red " in t or " blue " in t for t in data.tasks)
    images = data.images(np.array([0]))
    assert images.shape == (1, 2, 40, 40, 3) and images.std() > 5


def test_record_refuses_plain_and_colour_tasks_in_one_dataset(tmp_path, capsys):
    args = ["sim", "record", "--task", "touch,touch_color", "--episodes", "1", "--out", str(tmp_path / "x")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "different proprio layouts" in err and "\n" not in err
    assert not (tmp_path / "x").exists()
