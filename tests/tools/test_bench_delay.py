"""`anchorvla bench delay` and eval's seam jerk: a tick counts as a seam when its planned action comes from another
chunk than the tick before's; the bench runs eval's variants over latencies and draws its plot."""

from __future__ import annotations

import json

import numpy as np

from anchorvla.cli import main as cli
from sim.eval import seam_and_inside_jerk


def test_jerk_splits_at_the_ticks_where_the_plans_chunk_changes():
    dt = 0.1
    commands = np.zeros((8, 2))
    commands[5:] = 1.0  # a step at tick 5, the first tick of the second chunk
    chunks = ["a"] * 5 + ["b"] * 3
    seams, inside = seam_and_inside_jerk(commands, chunks, dt)
    assert len(seams) == 1 and len(inside) == 4  # ticks 3..7, tick 5 the seam
    assert seams[0] == np.sqrt(np.mean((np.array([1.0, 1.0]) / dt**3) ** 2))
    # A tick with nothing planned (None) is never a seam, nor the tick after it.
    seams, _ = seam_and_inside_jerk(commands, ["a"] * 4 + [None] + ["b"] * 3, dt)
    assert seams == []


def test_bench_delay_rows_per_latency_and_variant(tmp_path, capsys):
    out = tmp_path / "delay.json"
    args = ["bench", "delay", "--task", "touch", "--episodes", "1", "--latencies", "60", "400",
            "--variant", "name=drop,late=drop", "--variant", "name=shift,late=shift",
            "--json", str(out), "--plot", str(tmp_path / "delay.png")]  # fmt: skip
    assert cli(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["latency_ms"], r["variant"]) for r in rows] == [(60, "drop"), (60, "shift"), (400, "drop"), (400, "shift")]
    at_400 = {r["variant"]: r for r in rows if r["latency_ms"] == 400}
    assert at_400["drop"]["underruns"] > 0 and at_400["shift"]["underruns"] == 0
    assert (tmp_path / "delay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seam jerk" in capsys.readouterr().out
