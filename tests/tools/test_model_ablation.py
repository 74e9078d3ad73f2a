"""The ablation's synthetic two-route task and its metrics, and the benchmark end to end at a tiny budget."""

from __future__ import annotations

import argparse

import numpy as np

from tools import bench_ablation
from tools.obstacle_task import (
    chunk_at,
    clear_of_obstacle,
    error_to_nearest_demo,
    make_episodes,
    route_actions,
)


def test_both_routes_are_demonstrated_from_each_start_and_keep_clear_but_their_average_does_not():
    episodes = make_episodes(20, seed=3)
    for first, second in zip(episodes[::2], episodes[1::2], strict=True):
        np.testing.assert_array_equal(first.states[0], second.states[0])
        assert first.side == -second.side
    states = np.stack([ep.states[0] for ep in episodes])
    demos = np.stack([chunk_at(ep.actions, 0, 16) for ep in episodes])
    assert clear_of_obstacle(states[:, :2], demos).all()
    np.testing.assert_allclose(error_to_nearest_demo(states, demos, 16), 0.0, atol=1e-12)
    average = np.stack(
        [
            (
                chunk_at(route_actions(s[:2], s[2:], 1), 0, 16)
                + chunk_at(route_actions(s[:2], s[2:], -1), 0, 16)
            )
            / 2
            for s in states
        ]
    )
    assert not clear_of_obstacle(states[:, :2], average).any()
    assert (error_to_nearest_demo(states, average, 16) > 0.2).all()


def test_benchmark_runs_every_variant_and_reports_its_checks():
    parser = argparse.ArgumentParser()
    bench_ablation.add_arguments(parser)
    args = parser.parse_args(
        [
            "--steps",
            "3",
            "--residual-steps",
            "3",
            "--episodes",
            "8",
            "--test-episodes",
            "4",
            "--latency-repeats",
            "2",
            "--no-paper-size",
        ]
    )
    figures, ok = bench_ablation.main(args)
    assert len(figures["rows"]) == 6 and isinstance(ok, bool)
    for row in figures["rows"].values():
        assert 0.0 <= row["clear"] <= 1.0 and row["error_m"] >= 0 and row["latency_ms"] > 0
    assert set(figures["checks"]) == {
        "anchored 10 clearly above regression",
        "anchored 10 above plain diffusion 10",
        "anchored 10 several times faster than plain diffusion 50",
        "residual at or above anchored",
    }
