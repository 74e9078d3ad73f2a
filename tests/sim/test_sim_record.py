"""`anchorvla sim record`: expert episodes in a LeRobotDataset, the goal pose in the proprio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anchorvla.cli import main as cli_main
from policy_runtime.dataset import load_dataset
from sim.record import PROPRIO_LAYOUT


def test_record_writes_a_dataset_training_reads(tmp_path, capsys):
    out = tmp_path / "demos"
    args = [
        "sim",
        "record",
        "--task",
        "reach,lift",
        "--episodes",
        "1",
        "--out",
        str(out),
        "--image-size",
        "32",
    ]
    assert cli_main(args) == 0
    data = load_dataset(out, horizon=8)
    assert data.proprio_layout == PROPRIO_LAYOUT
    assert data.proprio_layout[-3:] == ("goal.x", "goal.y", "goal.z") and "arm.gripper" in data.proprio_layout
    assert data.action_layout[:3] == ("base.vx", "base.vy", "base.wz")
    assert data.cameras == ("third_person", "wrist")
    assert set(data.tasks) == {
        "reach the red ball around the blue one",
        "pick up the yellow ball and lift it",
    }
    images = data.images(np.array([0, len(data) - 1]))
    assert images.shape == (2, 2, 32, 32, 3) and images.std() > 5  # rendered, not blank
    goal = data.proprio[:, -3:]
    assert np.all((goal[:, 0] > 0.2) & (goal[:, 0] < 0.45))  # reach/lift objects lie within the arm's reach
    lift_rows = [i for i, t in enumerate(data.tasks) if t.startswith("pick up")]
    gripper = data.chunks[lift_rows, 0, data.action_layout.index("arm.gripper")]
    assert gripper.max() > 0.7 and gripper.min() < 0.1  # the expert opened, then closed the gripper
    assert "reach: 1 episodes" in capsys.readouterr().out
    info = json.loads((out / "meta/info.json").read_text())  # a LeRobotDataset, in SI units
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15 and info["total_episodes"] == 2
    assert info["features"]["action"]["units"][:3] == ["m/s", "m/s", "rad/s"]
    assert cli_main(args) == 2  # an existing dataset is not overwritten nor appended to
    assert "already holds a dataset" in capsys.readouterr().err


def test_unknown_task_exits_2_with_one_line(tmp_path, capsys):
    assert (
        cli_main(["sim", "record", "--task", "dance", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("anchorvla: error: --task 'dance'") and "\n" not in err


def test_episode_counts_per_task():
    from anchorvla.errors import UserError
    from sim.record import episode_counts

    assert episode_counts("3", ["touch", "lift"]) == {"touch": 3, "lift": 3}
    assert episode_counts("touch=2, lift=5", ["touch", "lift"]) == {"touch": 2, "lift": 5}
    for bad in ("touch=2", "touch=x,lift=1", "0"):
        with pytest.raises(UserError, match="--episodes"):
            episode_counts(bad, ["touch", "lift"])


def test_record_with_a_policy_driving_keeps_the_experts_labels_of_the_policys_states(tmp_path, capsys):
    # `--policy`: the controller drives (the demo bundle, as `anchorvla eval` runs it) and each tick records what
    # the expert would command from the state the policy brought the arm to: the residual stage's data.
    from onboard.config import load_config
    from onboard.devices import build_engine
    from sim.eval import run_episode, sim_cameras
    from sim.experts import Expert
    from sim.lockstep import SimRobot
    from tests.conftest import REPO

    config_path = REPO / "configs/sim.yaml"
    out = tmp_path / "driven"
    args = ["sim", "record", "--task", "reach", "--episodes", "1", "--seed", "10000"]
    args += ["--policy", str(config_path), "--variant", "residual=off", "--out", str(out)]
    assert cli_main(args) == 0
    assert "reach: 1 episodes driven by the policy" in capsys.readouterr().out
    data = load_dataset(out, horizon=8)
    assert data.cameras == ("third_person", "wrist") and data.proprio_layout == PROPRIO_LAYOUT
    assert len(data) > 10
    # Replayed: the first label is the expert's action for the episode's start state...
    robot = SimRobot(sim_cameras(load_config(config_path)))
    task = robot.start_episode("reach", 10000)
    expert = Expert(task, robot.world, 1 / 15, follow_side=True)
    np.testing.assert_allclose(data.chunks[0, 0], expert.act(), atol=1e-9)
    # ...and the episode is the policy's: one row per tick of the same episode run by eval (seeded, so identical).
    config = load_config(config_path, {"policy": {"residual": False}})
    engine = build_engine(config)
    try:
        driven = run_episode(config, engine, SimRobot(sim_cameras(config)), "reach", 10000, latency_ms=60.0)
    finally:
        engine.close()
    assert len(data) == driven.ticks
