"""The start-up check: a policy that needs what the configured robot does not supply stops `run` and `service run`
with one line naming it, before any device is built; configs/robot.yaml loads; the simulator keeps its goal."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anchorvla.cli import main as anchorvla
from anchorvla.errors import UserError
from onboard.config import load_config
from onboard.startup_check import check_policy_inputs, missing_inputs, policy_needs

REPO = Path(__file__).resolve().parents[2]
DEMO_BUNDLE = REPO / "policies" / "demo" / "bundle"


def robot_config_with(tmp_path: Path, **policy) -> Path:
    """configs/robot.yaml with the policy section changed (drivers stay the robot's: nothing here opens them)."""
    raw = yaml.safe_load((REPO / "configs" / "robot.yaml").read_text())
    raw["policy"].update(policy)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_robot_config_loads_with_every_device_of_the_robot():
    config = load_config(REPO / "configs" / "robot.yaml")
    robot = config.robot
    assert (robot.arm.driver, robot.arm.port) == ("feetech", "/dev/so101")
    assert robot.arm.calibration is not None and robot.arm.calibration.is_absolute()
    assert (robot.base.driver, robot.base.interface, robot.base.domain_id) == ("go2", "eth0", 0)
    assert [(c.name, c.driver, bool(c.serial)) for c in robot.cameras] == [
        ("third_person", "realsense", True),
        ("wrist", "uvc", True),
    ]
    assert config.policy.engine == "tensorrt" and config.recording.enabled


def test_every_value_of_the_robot_config_is_commented():
    lines = (REPO / "configs" / "robot.yaml").read_text().splitlines()
    values = [
        ln for ln in lines if ":" in ln and not ln.lstrip().startswith("#") and not ln.rstrip().endswith(":")
    ]
    bare = [ln for ln in values if "#" not in ln]
    assert not bare, bare


@pytest.mark.parametrize("command", [["run"], ["service", "run"]])
def test_demo_bundle_on_the_robot_stops_at_start_naming_goal_x(tmp_path, capsys, command):
    config = robot_config_with(tmp_path, bundle=str(DEMO_BUNDLE), engine="onnxruntime")
    rc = anchorvla([*command, "--config", str(config), "--duration", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "goal.x" in err and "sim.task" in err
    # It stopped before any device: no feetech port or Go2 was looked for.
    assert "/dev/so101" not in err and "Go2" not in err


def test_the_simulator_supplies_the_goal_of_the_same_bundle():
    config = load_config(REPO / "configs" / "sim.yaml")
    assert config.sim.task is not None and config.policy.bundle == DEMO_BUNDLE.resolve()
    check_policy_inputs(config, goal_supplied=True)  # what `run` passes for sim.task
    with pytest.raises(UserError, match=r"proprio goal\.x, goal\.y, goal\.z"):
        check_policy_inputs(config, goal_supplied=False)


def test_missing_cameras_action_channels_and_joints_are_each_named(tmp_path):
    overrides = {
        "robot": {
            "arm": {
                "driver": "standin",
                "joint_names": ["shoulder_pan", "shoulder_lift", "elbow_flex"],
                "ids": [1, 2, 3],
            },
            "base": {"driver": "none"},
            "cameras": [{"name": "front", "driver": "standin"}],
        },
        "policy": {"engine": "onnxruntime", "bundle": str(DEMO_BUNDLE)},
    }
    config = load_config(REPO / "configs" / "standin.yaml", overrides)
    needs = policy_needs(config)
    missing = " | ".join(missing_inputs(config, needs, goal_supplied=True))
    assert "proprio base.vx, base.vy, base.wz, arm.wrist_flex, arm.wrist_roll, arm.gripper" in missing
    assert (
        "action channel(s) base.vx, base.vy, base.wz, arm.wrist_flex, arm.wrist_roll, arm.gripper" in missing
    )
    assert "camera(s) third_person, wrist (robot.cameras has: front)" in missing


def test_the_standin_engine_needs_nothing_and_a_missing_bundle_is_one_line(tmp_path, capsys):
    check_policy_inputs(load_config(REPO / "configs" / "standin.yaml"), goal_supplied=False)
    config = robot_config_with(tmp_path, bundle=str(tmp_path / "nope"))
    assert anchorvla(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found" in err
