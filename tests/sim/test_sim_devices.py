"""The lockstep devices step one World on a virtual clock; the task monitor ends runs; the goal reaches the engine."""

from __future__ import annotations

import numpy as np

from drivers import robot_model as kin
from drivers.emulated.world import World
from onboard.standins import StandinEngine
from policy_runtime.types import Observation
from sim.experts import inverse_kinematics
from sim.lockstep import SimRobot
from sim.session import GoalEngine, TaskMonitor
from sim.tasks import start_task


def test_arm_follows_goals_through_the_servo_model_and_writes_the_world():
    robot = SimRobot([("wrist", "wrist", 32, 32, 15)])
    robot.start_episode("lift", 0)
    goal = np.array([0.3, -0.2, 0.4, 0.1, 0.0, 0.5])
    robot.arm.write_goal(goal)
    robot.clock.advance(10_000_000)  # 10 ms: the servos are on their way, not there
    midway = robot.arm.read_state().positions
    assert 0 < abs(midway[0]) < 0.3
    robot.clock.advance(1_000_000_000)
    state = robot.arm.read_state()
    assert np.allclose(state.positions, goal, atol=0.01)  # within a few ticks of 0.088 deg
    assert np.allclose(robot.world.joint_positions, state.positions)
    frame = robot.cameras[0].latest()
    assert frame.image.shape == (32, 32, 3) and frame.t_ns <= robot.clock.now_ns


def test_base_moves_with_the_go2_acceleration_limit_and_writes_the_world():
    robot = SimRobot([])
    robot.start_episode("touch", 0)
    robot.base.move(0.5, 0.0, 0.0)
    robot.clock.advance(100_000_000)
    assert robot.base.read_state().velocity[0] <= 2.0 * 0.1 + 1e-9  # 2 m/s^2 at most
    for _ in range(10):
        robot.base.move(0.5, 0.0, 0.0)
        robot.clock.advance(100_000_000)
    state = robot.base.read_state()
    assert abs(state.velocity[0] - 0.5) < 1e-6
    assert robot.world.base_pose[0] == state.position[0] > 0.3


def test_goal_engine_gives_every_observation_the_goal():
    seen = []

    class Recorder(StandinEngine):
        def infer(self, obs):
            seen.append(obs.goal)
            return super().infer(obs)

    engine = GoalEngine(Recorder(("a",), 66_666_667, compute_ms=0), lambda: np.array([0.3, 0.0, 0.1]))
    robot = SimRobot([])
    arm = robot.arm.read_state()
    engine.infer(Observation(0, arm, None, {}))
    assert np.allclose(seen[0], (0.3, 0.0, 0.1))


def test_task_monitor_stops_on_success_and_on_timeout():
    world = World()
    task = start_task("reach", world, 0)
    reasons = []
    monitor = TaskMonitor(task, world, reasons.append)
    for _ in range(task.max_steps):
        monitor(0)
    assert reasons[-1] == "task_timeout" and not monitor.result(15.0)["success"]
    world.objects["obstacle"].position[:] = (9.0, 9.0, 9.0)  # out of the way
    ball = world.objects["ball"].position
    world.set_joints(np.append(inverse_kinematics(ball - (*kin.ARM_MOUNT_ON_BASE, world.base_height)), 0.0))
    monitor(0)
    assert reasons[-1] == "task_success"
    result = monitor.result(15.0)
    assert result["success"] and result["time_to_success_s"] == round((task.max_steps + 1) / 15.0, 3)


def test_each_episode_starts_with_the_servos_cooled_down():
    # An evaluation runs episodes back to back on one emulated robot; heat must not carry over from one to the
    # next (a long run heated wrist_flex to its 70 C shutdown and the next episode stalled).
    robot = SimRobot([])
    robot.start_episode("lift", 0)
    rested = [s.temperature for s in robot.arm.servos]
    for s in robot.arm.servos:
        s.temperature, s.overload_s = 69.0, 0.5
    robot.start_episode("lift", 1)
    assert [s.temperature for s in robot.arm.servos] == rested
    assert all(s.overload_s == 0.0 for s in robot.arm.servos)
