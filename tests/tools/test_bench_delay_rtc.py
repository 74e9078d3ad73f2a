"""`anchorvla bench delay` with real-time chunking rows: they run a bundle with prefix inputs (`--bundle`), the bench
times the inference with and without a prefix on that engine, and a bundle without prefix inputs is refused in one
line before any episode runs."""

from __future__ import annotations

import json
from pathlib import Path

from anchorvla.cli import main as cli
from tests.bundle_helpers import tiny_bundle

REPO = Path(__file__).resolve().parents[2]


def test_rtc_rows_run_beside_the_others_and_the_prefix_overhead_is_timed(tmp_path, capsys):
    _checkpoint, bundle = tiny_bundle()
    out = tmp_path / "delay.json"
    args = ["bench", "delay", "--config", str(REPO / "configs/sim.yaml"), "--task", "touch", "--episodes", "1",
            "--latencies", "400", "--bundle", str(bundle), "--variant", "name=shift,late=shift",
            "--variant", "name=shift+rtc,late=shift,rtc=on", "--json", str(out)]  # fmt: skip
    assert cli(args) == 0
    figures = json.loads(out.read_text())
    rows = figures["rows"]
    assert [(r["latency_ms"], r["variant"]) for r in rows] == [(400, "shift"), (400, "shift+rtc")]
    assert rows[1]["underruns"] == 0 and rows[1]["world"] == {}
    overhead = figures["prefix_overhead"]
    assert overhead["prefix_steps"] == 4 and overhead["infer_plain_ms"] > overhead["head_plain_ms"] > 0
    assert "prefix conditioning, 200 inferences each" in capsys.readouterr().out


def test_an_rtc_row_on_a_bundle_without_prefix_inputs_is_refused_before_any_episode(capsys):
    old = REPO / "policies/demo/bundle"  # committed before the head took a prefix
    args = ["bench", "delay", "--config", str(REPO / "configs/sim.yaml"), "--task", "touch", "--episodes", "1",
            "--latencies", "60", "--bundle", str(old), "--variant", "late=shift", "--variant", "rtc=on"]  # fmt: skip
    assert cli(args) == 2
    captured = capsys.readouterr()
    assert "success" not in captured.out  # no episode ran
    assert "no prefix inputs" in captured.err.strip().splitlines()[-1]
