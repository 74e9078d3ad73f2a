"""tools/image_reliance: a checkpoint's first planned action against the recorded one, with and without images."""

from __future__ import annotations

import math

from anchorvla.cli import main as cli
from tools.image_reliance import image_reliance, main


def test_rows_per_varying_channel_and_blank_images_change_the_actions(tmp_path, capsys):
    data, ckpt = tmp_path / "ds", tmp_path / "ckpt"
    assert cli(["sim", "record", "--task", "touch_color", "--episodes", "1", "--seed", "7", "--out", str(data)]) == 0
    train = ["train", "--dataset", str(data), "--out", str(ckpt), "--architecture", "tiny", "--horizon", "4",
             "--num-anchors", "4", "--steps", "3", "--residual-steps", "1", "--batch", "4", "--threads", "1",
             "--no-progress"]  # fmt: skip
    assert cli(train) == 0
    rows = image_reliance(ckpt, data, count=40)
    (task,) = {r["task"] for r in rows}  # one episode, one instruction
    assert task in ("drive to the red marker and touch it", "drive to the blue marker and touch it")
    assert "base.vx" in {r["channel"] for r in rows}
    assert all(-1 <= r["corr"] <= 1 or math.isnan(r["corr"]) for r in rows)
    assert any(r["mae"] != r["mae_blank"] for r in rows)  # the images reach the actions

    capsys.readouterr()
    assert main([str(ckpt), str(data), "--count", "40"]) == 0
    assert "base.vx" in capsys.readouterr().out
