"""Eval variants on the world's side (sim/world_variants.py): the colour tasks' language and vision checks, and
drift (slip, nudge, servo compliance, heavy-tailed latency): each happens, is drawn from the episode's seed and is
off by default."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers.emulated.sts_servo import EmulatedServo
from drivers.types import SO101_JOINTS
from onboard.config import load_config
from policy_runtime.types import BASE_CHANNELS, ActionChunk, arm_channel
from sim.eval import parse_variant, run_episode, sim_cameras
from sim.experts import Expert
from sim.lockstep import SimRobot
from sim.tasks import tool_point
from sim.world_variants import EpisodeDrift, WorldVariant, gravity_torque
from tests.sim.test_eval_lockstep import REPO

DT_S = 1 / 15


def drift(variant: WorldVariant, name: str = "reach", seed: int = 3) -> tuple[SimRobot, object, EpisodeDrift]:
    robot = SimRobot([("wrist", "wrist", 24, 24, 15)])
    task = robot.start_episode(name, seed)
    return robot, task, EpisodeDrift(variant, robot, task, seed, DT_S)


def stand(robot: SimRobot, effect: EpisodeDrift, ticks: int) -> None:
    """The robot holds still (arm at its start pose, base stopped) while the drift acts."""
    hold = robot.arm.read_state().positions
    for tick in range(ticks):
        effect.before_tick(tick)
        robot.arm.write_goal(hold)
        robot.base.move(0.0, 0.0, 0.0)
        robot.clock.advance(round(DT_S * 1e9))
        robot.arm.read_state()
        robot.base.read_state()


def test_variant_keys_for_the_world():
    label, overrides, world = parse_variant("slip=0.03,nudge=0.05,compliance=8,tail=0.5,name=drift")
    assert (label, overrides) == ("drift", {"policy": {}})
    assert world == WorldVariant(slip_mps=0.03, nudge_m=0.05, compliance_deg=8.0, latency_sigma=0.5)
    assert parse_variant("instruction=other,images=blank")[2] == WorldVariant(True, True)
    assert parse_variant("H=5")[2] == WorldVariant() and WorldVariant().changed() == {}
    assert world.changed() == {"slip_mps": 0.03, "nudge_m": 0.05, "compliance_deg": 8.0, "latency_sigma": 0.5}
    for bad in ("slip=-1", "nudge=far", "tail=nan", "images=dark", "instruction=any"):
        with pytest.raises(UserError, match="not understood"):
            parse_variant(bad)


def test_off_by_default_nothing_drifts():
    robot, task, effect = drift(WorldVariant())
    start = robot.world.base_pose.copy(), robot.world.objects["ball"].position.copy()
    stand(robot, effect, 60)
    assert np.array_equal(robot.world.base_pose, start[0])
    assert np.array_equal(robot.world.objects["ball"].position, start[1])
    assert effect.latency_ns(200_000_000) == 200_000_000
    assert all(s.faults.external_load == 0 and s.faults.compliance_ticks == 0 for s in robot.arm.servos)


def test_slip_moves_the_standing_body_seeded():
    poses = []
    for seed in (3, 3, 4):
        robot, _, effect = drift(WorldVariant(slip_mps=0.03), seed=seed)
        stand(robot, effect, 45)
        poses.append(robot.world.base_pose.copy())
        assert robot.base.read_state().velocity[:2] == pytest.approx(
            [0.0, 0.0]
        )  # unmeasured: not in the state
    assert np.array_equal(poses[0], poses[1])  # the same seed, the same slip
    assert not np.array_equal(poses[0], poses[2])
    assert 0.005 < np.linalg.norm(poses[0][:2]) < 0.5  # 3 s at 3 cm/s RMS: centimetres, not metres


def test_nudge_moves_the_target_with_its_obstacle_once():
    robot, task, effect = drift(WorldVariant(nudge_m=0.04))
    ball, obstacle = (robot.world.objects[k].position.copy() for k in ("ball", "obstacle"))
    assert round(1.0 / DT_S) <= effect.nudge_tick < round(2.5 / DT_S)
    stand(robot, effect, effect.nudge_tick)
    assert np.array_equal(robot.world.objects["ball"].position, ball)  # not yet
    effect.before_tick(effect.nudge_tick)
    moved = robot.world.objects["ball"].position - ball
    assert effect.nudged and np.linalg.norm(moved) == pytest.approx(0.04) and moved[2] == 0.0
    assert np.allclose(robot.world.objects["obstacle"].position - obstacle, moved)
    assert np.allclose(task.start_goal_position, robot.world.objects["ball"].position)
    again = drift(WorldVariant(nudge_m=0.04))[2]
    assert (again.nudge_tick, list(again.nudge_offset)) == (effect.nudge_tick, list(effect.nudge_offset))


def test_a_held_target_is_not_nudged():
    robot, task, effect = drift(WorldVariant(nudge_m=0.04), name="lift")
    robot.world.objects["ball"].held = True
    before = robot.world.objects["ball"].position.copy()
    effect.before_tick(effect.nudge_tick)
    assert not effect.nudged and np.array_equal(robot.world.objects["ball"].position, before)


def test_a_compliant_servo_settles_yielded_under_load():
    stiff, soft = EmulatedServo(1), EmulatedServo(2)
    for servo in (stiff, soft):
        servo.write(40, bytes([1]))  # torque on
        servo.faults.external_load = -0.25
    soft.faults.compliance_ticks = 400.0
    for servo in (stiff, soft):
        servo.set_value("Goal_Position", 2500)
        servo.advance(0.0)
        servo.advance(2.0)
    assert stiff.present_ticks() == 2500
    assert soft.present_ticks() == 2400  # 400 ticks x 0.25 of full load, towards the load
    assert soft.value("Present_Load") == pytest.approx(-250, abs=1)  # holding the load


def test_compliance_lets_the_arm_sag_under_gravity():
    reach_out = np.array([0.0, 0.9, -0.6, 0.0, 0.0, 0.5])  # the upper arm well forward of upright
    tips = {}
    for deg in (0.0, 10.0):
        robot, _, effect = drift(WorldVariant(compliance_deg=deg))
        robot.arm.write_goal(reach_out)
        robot.clock.advance(2_000_000_000)
        state = robot.arm.read_state()
        robot.clock.advance(100_000_000)
        state = robot.arm.read_state()
        tips[deg] = tool_point(state.positions, robot.world.base_pose, robot.world.base_height)
        if deg == 0:
            assert np.allclose(state.positions, reach_out, atol=0.003)
    torque = gravity_torque(reach_out)
    assert torque[0] == pytest.approx(0.0, abs=1e-6) and abs(torque[1]) > 0.2  # pan unloaded, lift loaded
    assert 0.003 < tips[0.0][2] - tips[10.0][2] < 0.05  # the tool sags, by millimetres to centimetres


def test_heavy_tailed_latency_is_lognormal_around_the_given_one():
    draws = []
    for _ in range(2):
        _, _, effect = drift(WorldVariant(latency_sigma=0.5))
        draws.append([effect.latency_ns(200_000_000) for _ in range(2000)])
    assert draws[0] == draws[1]  # seeded
    ms = np.array(draws[0]) / 1e6
    assert np.median(ms) == pytest.approx(200, rel=0.08)
    assert np.percentile(ms, 99) > 2.5 * 200  # a heavy tail (lognormal 0.5: p99 = 3.2 x the median)


class ExpertEngine:
    """A `PolicyEngine` driven by the task's scripted expert (the world's truth): it records what it was given and
    returns each action held for a chunk, the expert stepping a chunk's length at a time."""

    def __init__(self, robot, task_of):
        self.robot, self.task_of = robot, task_of
        self.channels = BASE_CHANNELS + tuple(arm_channel(j) for j in SO101_JOINTS)
        self.dt_ns = round(DT_S * 1e9)
        self.seen = []
        self.expert = None

    def warmup(self) -> None:
        pass

    def infer(self, obs):
        task = self.task_of()
        if self.expert is None or self.expert.task is not task:
            self.expert = Expert(task, self.robot.world, 5 * DT_S)
        self.seen.append(obs)
        action = self.expert.act()
        return ActionChunk(obs.t_ns, self.dt_ns, self.channels, np.tile(action, (8, 1)))

    def residual(self, obs, chunk, j, planned):
        return None

    def close(self) -> None:
        pass


def run_with_expert(name: str, seed: int, variant: WorldVariant):
    config = load_config(REPO / "configs/sim.yaml")
    robot = SimRobot(sim_cameras(config))
    tasks = []
    start = robot.start_episode
    robot.start_episode = lambda n, s: tasks.append(start(n, s)) or tasks[-1]
    engine = ExpertEngine(robot, lambda: tasks[-1])
    result = run_episode(config, engine, robot, name, seed, latency_ms=60.0, variant=variant)
    return result, tasks[-1], engine.seen


@pytest.mark.parametrize("name", ["reach_color", "lift_color"])
def test_instruction_other_names_the_distractor_and_success_means_reaching_it(name):
    plain, plain_task, plain_seen = run_with_expert(name, 5, WorldVariant())
    other, other_task, other_seen = run_with_expert(name, 5, WorldVariant(instruction_other=True))
    assert plain.success and other.success  # the expert goes where the instruction says
    assert other_task.goal == plain_task.distractor and other_task.distractor == plain_task.goal
    assert other_seen[0].instruction == other_task.instruction != plain_seen[0].instruction
    assert f"the {other_task.colors[other_task.goal]} " in other_seen[0].instruction
    assert all(obs.goal is None for obs in plain_seen + other_seen)  # no privileged goal


def test_images_blank_gives_the_policy_black_frames():
    result, _, seen = run_with_expert("reach_color", 5, WorldVariant(blank_images=True))
    frames = [f.image for obs in seen for f in obs.frames.values()]
    assert frames and all(not img.any() for img in frames)
    _, _, lit = run_with_expert("reach_color", 5, WorldVariant())
    assert all(f.image.std() > 5 for obs in lit for f in obs.frames.values())


def test_a_goal_reading_policy_is_refused_on_a_colour_task(capsys):
    from anchorvla.cli import main as cli_main

    args = ["eval", "--config", str(REPO / "configs/sim.yaml"), "--task", "reach_color", "--episodes", "1"]
    assert cli_main([*args, "--latency-ms", "60"]) == 2
    # The error is one line, the last one (an engine's INFO line may come before it once logging is set up).
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("anchorvla: error: ") and "gives the policy no goal position" in err and "goal.x" in err


def test_tail_without_a_latency_is_refused(capsys):
    from anchorvla.cli import main as cli_main

    args = ["eval", "--config", str(REPO / "configs/sim.yaml"), "--task", "reach", "--episodes", "1"]
    assert cli_main([*args, "--variant", "tail=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("anchorvla: error: ") and "--latency-ms" in err
