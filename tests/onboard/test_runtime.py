"""The two-loop runtime end to end against the in-memory stand-ins."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from onboard.config import Config
from onboard.devices import build_engine
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinArm, StandinBase, StandinCamera
from tests.conftest import REPO


def make_runtime(rate_hz=15.0, horizon=5, **standin):
    config = Config.model_validate(
        {"control": {"rate_hz": rate_hz}, "policy": {"execute_horizon": horizon, "standin": standin}}
    )
    joints = tuple(config.robot.arm.joint_names)
    arm, base = StandinArm(joints), StandinBase()
    devices = Devices(arm, base, [StandinCamera(c.name) for c in config.robot.cameras])
    engine = build_engine(config)
    return Runtime(config, devices, engine), arm, base, engine


def test_runs_and_follows_chunks():
    runtime, arm, base, engine = make_runtime(compute_ms=20)
    result = run_event_loop(runtime.run(2.0))
    assert result["exit_reason"] == "duration"
    assert 25 <= result["ticks"] <= 31
    assert result["chunks"] >= 4 and result["underruns"] == 0
    assert result["safety"]["safe_stops"] == 1
    # The arm was commanded along the engine's trajectory (rate-limited at first), and the base was stopped at the end.
    assert np.ptp(np.array(arm.goals_written), axis=0).max() > 0.05
    assert base.moves[-1] == (0.0, 0.0, 0.0) and base.stop_moves == 1


def test_nan_chunks_are_never_executed_and_counted():
    runtime, arm, base, engine = make_runtime(horizon=1, compute_ms=10, nan_every=2)
    result = run_event_loop(runtime.run(2.0))
    rejected = result["safety"]["rejected"]
    assert rejected >= 5 and engine.calls // 2 - 1 <= rejected <= engine.calls // 2
    # every call is either a chunk or a rejection, except one abandoned in flight at the stop
    assert engine.calls - 1 <= result["chunks"] + rejected <= engine.calls
    assert all(np.all(np.isfinite(g)) for g in arm.goals_written)
    assert all(np.all(np.isfinite(m)) for m in base.moves)
    assert result["exit_reason"] == "duration"


def test_engine_failures_hold_and_keep_running():
    runtime, arm, base, engine = make_runtime(horizon=1, compute_ms=10, fail_every=3)
    result = run_event_loop(runtime.run(2.0))
    assert result["inference_failures"] >= 3
    assert result["chunks"] >= 5
    assert result["ticks"] >= 25


def test_always_failing_engine_holds_arm_and_stops_base():
    runtime, arm, base, engine = make_runtime(compute_ms=5, fail_every=1)
    result = run_event_loop(runtime.run(1.0))
    assert result["chunks"] == 0 and result["inference_failures"] >= 3
    assert all(np.allclose(g, 0.0) for g in arm.goals_written)  # held where it started
    assert all(m == (0.0, 0.0, 0.0) for m in base.moves)


def test_sigterm_mid_run_safe_stop_exit_0(tmp_path):
    summary = tmp_path / "s.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anchorvla.cli",
            "run",
            "--config",
            str(REPO / "configs/standin.yaml"),
            "--summary",
            str(summary),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(summary.read_text())
    assert data["exit_reason"] == "signal:SIGTERM"
    assert data["safety"]["safe_stops"] == 1
    assert data["ticks"] > 10
    for key in (
        "ticks",
        "control_hz",
        "lateness_ms",
        "overruns",
        "tick_compute_ms",
        "chunks",
        "inference_ms",
        "underruns",
        "stale_actions_dropped",
        "safety",
        "exit_reason",
    ):
        assert key in data


def test_estop_holds_the_arm_and_sends_move_zero_before_returning_then_its_device_part_stops_the_base():
    """Between two ticks: the e-stop latches, writes the arm's hold goal and base Move 0 at once (not at the
    next tick), and hands back the StopMove for the caller to run off the event loop."""
    import asyncio

    runtime, arm, base, _ = make_runtime(compute_ms=5, amplitude=0.3, base_speed=0.3)
    seen: dict = {}

    def estop_between_ticks() -> None:
        goals, moves, ticks = len(arm.goals_written), len(base.moves), runtime.stats.ticks
        device_part = runtime.estop("test")
        seen["ticks_unchanged"] = runtime.stats.ticks == ticks
        seen["new_goal"] = len(arm.goals_written) == goals + 1
        seen["move_zero"] = base.moves[moves:] == [(0.0, 0.0, 0.0)]
        seen["stop_moves_before"] = base.stop_moves
        device_part()
        seen["stop_moves_after"] = base.stop_moves
        seen["moves_at_estop"] = len(base.moves)

    def on_tick(_deadline_ns: int) -> None:
        if runtime.stats.ticks == 20:
            assert any(m[0] > 0 for m in base.moves)  # under way
            asyncio.get_running_loop().call_later(runtime.fast.period_ns / 2e9, estop_between_ticks)
        elif runtime.stats.ticks == 30:
            runtime.stop("test over")

    runtime.fast.tick_listeners.append(on_tick)
    result = run_event_loop(runtime.run(5.0))
    assert seen["ticks_unchanged"] and seen["new_goal"] and seen["move_zero"], seen
    assert seen["stop_moves_after"] == seen["stop_moves_before"] + 1
    assert [f.split(":")[0] for f in result["faults"]] == ["operator_estop"]
    assert all(m == (0.0, 0.0, 0.0) for m in base.moves[seen["moves_at_estop"] - 1 :])
