"""A recorded dataset given to `quantize --episodes` (and `verify --data`, through the same samples) whose channels
or cameras are not the bundle's: one line naming what differs, exit 2, the bundle untouched."""

from __future__ import annotations

import json

from anchorvla.cli import main as cli
from tests.bundle_helpers import bundle_copy, write_demo_dataset
from tools.obstacle_task import write_demo_dataset as write_obstacle_dataset


def test_a_dataset_of_another_robot_is_one_line_naming_what_differs(tmp_path, capsys):
    bundle = bundle_copy(tmp_path)
    before = (bundle / "manifest.json").read_text()
    other = write_obstacle_dataset(tmp_path / "obstacle", episodes=2, seed=0)
    capsys.readouterr()  # the shared bundle's making
    assert cli(["quantize", str(bundle), "--precision", "int8", "--episodes", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not match the bundle: proprio channels: lacks arm.shoulder_pan" in err
    assert "has pos.x, pos.y, goal.x, goal.y besides" in err and "cameras: lacks third_person, wrist" in err
    assert (bundle / "manifest.json").read_text() == before
    # The same robot's recording calibrates.
    ours = write_demo_dataset(tmp_path / "ours", seed=3)
    assert json.loads((ours / "meta/info.json").read_text())["codebase_version"] == "v3.0"
    assert cli(["quantize", str(bundle), "--precision", "int8", "--episodes", str(ours)]) == 0
    assert "INT8 calibration: 12 recorded observations from" in capsys.readouterr().out
