"""`anchorvla eval`: variants, smoothness figures, and closed-loop episodes of the controller's own loops in lockstep
with the emulated devices (the shipped demo checkpoint through the torch engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anchorvla.cli import main as cli_main
from anchorvla.errors import UserError
from sim.eval import EpisodeResult, parse_variant, smoothness, summarize
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torch's pool spins against other load on a shared 2-core machine


def test_variant_specs_become_config_overrides():
    assert parse_variant("H=2,residual=off")[:2] == (
        "H=2,residual=off",
        {"policy": {"execute_horizon": 2, "residual": False}},
    )
    assert parse_variant("blend=exponential")[:2] == (
        "blend=exponential",
        {"policy": {"blending": {"mode": "exponential"}}},
    )
    assert parse_variant("")[:2] == ("config", {"policy": {}})
    bundle = REPO / "policies/demo/bundle"
    assert parse_variant(f"name=Demo,bundle={bundle},engine=onnxruntime")[:2] == (
        "Demo",
        {"policy": {"bundle": bundle, "engine": "onnxruntime"}},
    )
    with pytest.raises(UserError, match="is not a directory"):
        parse_variant("bundle=/no/such/dir")
    with pytest.raises(UserError, match="'H=0' not understood"):
        parse_variant("H=0")
    with pytest.raises(UserError, match="'speed=fast' not understood"):
        parse_variant("speed=fast")


def test_smoothness_of_known_trajectories():
    dt = 0.1
    t = np.arange(20)[:, None] * dt
    jerk, accel = smoothness(t**3, np.hstack([2.0 * t, 0 * t, 0 * t]), dt)
    assert jerk == pytest.approx(6.0)  # d3/dt3 of t^3
    assert accel == pytest.approx(2.0)  # vx ramps at 2 m/s^2
    jerk, accel = smoothness(np.ones((10, 6)), np.zeros((10, 3)), dt)
    assert jerk == 0.0 and accel == 0.0


def test_the_summary_counts_why_episodes_failed():
    def episode(failure):
        return EpisodeResult(
            "reach", failure is None, 2.0 if failure is None else None, 30, 1.0, 0.0, 0, 0, 0, failure
        )

    obstacle = "touched the obstacle"
    summary = summarize([episode(None), episode(obstacle), episode("timed out"), episode(obstacle)])
    assert summary["success_rate"] == 0.25
    assert summary["failures"] == {obstacle: 2, "timed out": 1}
    assert list(summary["failures"]) == [obstacle, "timed out"]  # most common first


def test_eval_runs_variants_side_by_side_and_writes_json(tmp_path):
    out = tmp_path / "eval.json"
    args = ["eval", "--config", str(REPO / "configs/sim.yaml"), "--task", "reach", "--episodes", "2"]
    checkpoint = REPO / "policies/demo/checkpoint"
    args += ["--variant", "H=5", "--variant", f"H=2,residual=off,engine=torch,bundle={checkpoint},name=ckpt"]
    args += ["--latency-ms", "60", "--json", str(out)]
    proc = run_cli(*args, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert "virtual clock" in data["caption"] and "60 ms of virtual time" in data["caption"]
    rows = {(r["variant"], r["task"]): r for r in data["rows"]}
    assert set(rows) == {("H=5", "reach"), ("ckpt", "reach")}
    assert rows["H=5", "reach"]["graphs_mb"] > 0.5  # the demo bundle's INT8 graphs
    assert rows["ckpt", "reach"]["graphs_mb"] is None  # a checkpoint run by torch has no graph files
    assert (
        rows["H=5", "reach"]["engine_variant"] == "int8"
        and rows["ckpt", "reach"]["engine_variant"] == "torch"
    )
    for row in rows.values():
        assert row["episodes"] == 2
        assert 0.0 <= row["success_rate"] <= 1.0
        # every failed episode has its reason
        assert sum(row["failures"].values()) == round(row["episodes"] * (1 - row["success_rate"]))
        assert row["inference_ms_p50"] > 0 and row["tick_compute_ms_p50"] > 0
        assert row["jerk_rms_median"] > 0  # the policy moved the arm
        assert isinstance(row["rss_growth_mb"], float)
    assert "ckpt" in proc.stdout and "graphs MB" in proc.stdout and "virtual clock" in proc.stdout


def test_eval_jobs_run_variants_in_parallel_with_the_same_outcomes(tmp_path):
    # Each episode is a function of its seed and the virtual clock, so evaluating the variants in worker
    # processes must give the rows, in the same order, that one process gives; only wall-time figures differ.
    def rows(jobs: int) -> list[dict]:
        out = tmp_path / f"eval-{jobs}.json"
        args = ["eval", "--config", str(REPO / "configs/sim.yaml"), "--task", "touch,reach", "--episodes"]
        args += ["2", "--variant", "H=5,name=a", "--variant", "H=2,slip=0.02,name=b", "--latency-ms", "60"]
        proc = run_cli(*args, "--jobs", str(jobs), "--json", str(out), env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(out.read_text())["rows"]

    outcome = ("variant", "task", "success_rate", "jerk_rms_median", "interventions_per_episode", "underruns")
    serial, parallel = rows(1), rows(2)
    assert [r["variant"] for r in parallel] == ["a"] * 3 + ["b"] * 3
    assert [{k: r[k] for k in outcome} for r in parallel] == [{k: r[k] for k in outcome} for r in serial]
    assert serial[0]["jerk_rms_median"] != serial[3]["jerk_rms_median"]  # the two variants do differ


def test_eval_refuses_a_config_without_the_emulated_robot(tmp_path, capsys):
    assert (
        cli_main(
            ["eval", "--config", str(REPO / "configs/standin.yaml"), "--task", "lift", "--episodes", "1"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "eval runs the emulated robot" in err and "\n" not in err


def test_the_slow_loop_plans_for_the_virtual_latency_so_chunks_overlap_and_blend():
    # With --latency-ms the slow loop must time its next start by the virtual latency (what the runtime would
    # measure), not by the faster wall time: then each chunk arrives while the previous plan still runs and the
    # blending mode shapes the commands. Timed by the wall time, chunks arrived after the plan ran out and
    # `exponential` gave the same commands as `none`.
    from onboard.config import load_config
    from onboard.devices import build_engine
    from sim.eval import run_episode, sim_cameras
    from sim.lockstep import SimRobot

    commands = {}
    for mode in ("none", "exponential"):
        config = load_config(REPO / "configs/sim.yaml", {"policy": {"blending": {"mode": mode}}})
        robot = SimRobot(sim_cameras(config))
        engine = build_engine(config)
        try:
            result = run_episode(config, engine, robot, "reach", 10_000, latency_ms=60.0)
        finally:
            engine.close()
        commands[mode] = (result.ticks, result.jerk_rms)
    assert commands["none"] != commands["exponential"]


def test_an_episode_gives_the_same_result_whatever_ran_before_it_in_the_engine():
    # Each episode restarts the engine's diffusion noise from its seed: a task's figures then do not depend on
    # which tasks or seeds the same run evaluated first (before, reach alone and reach after touch differed).
    from onboard.config import load_config
    from onboard.devices import build_engine
    from sim.eval import run_episode, sim_cameras
    from sim.lockstep import SimRobot

    config = load_config(REPO / "configs/sim.yaml")
    robot = SimRobot(sim_cameras(config))
    engine = build_engine(config)
    try:
        first = run_episode(config, engine, robot, "reach", 10_001, latency_ms=60.0)
        run_episode(config, engine, robot, "lift", 10_002, latency_ms=60.0)
        again = run_episode(config, engine, robot, "reach", 10_001, latency_ms=60.0)
    finally:
        engine.close()
    assert (again.ticks, again.success, again.jerk_rms) == (first.ticks, first.success, first.jerk_rms)
