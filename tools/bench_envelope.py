"""`anchorvla bench envelope`: what the safety envelope costs per fast-loop tick.

Rows, measured in the same run on the same random commands and states: a bare `np.clip` to the position
limits (the least any envelope does), the pure limiter (`limit_command`), and the whole per-tick safety work
of the runtime (`SafetyLayer.observe` with every monitor, then `filter`). The goal: median under 0.2 ms.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from drivers.types import SO101_JOINTS, ArmState, BaseState, BaseVelocity, Command, Frame
from safety.config import SafetyConfig
from safety.envelope import SafetyLayer
from safety.limits import Limits, Previous, limit_command

BUDGET_MS = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ticks", type=int, default=20_000, help="ticks timed per row")


def _inputs(n_ticks: int, rng: np.random.Generator):
    """Policy outputs (some non-finite, some far out of range) and measured states with health fields."""
    n = len(SO101_JOINTS)
    desired = rng.normal(0.0, 1.0, (n_ticks, n))
    desired[rng.random(n_ticks) < 0.05, 0] = np.nan
    base = rng.normal(0.0, 0.5, (n_ticks, 3))
    measured = rng.normal(0.0, 0.5, (n_ticks, n))
    return desired, base, measured


def _time(fn, n_ticks: int) -> np.ndarray:
    out = np.empty(n_ticks)
    for i in range(n_ticks):
        t0 = time.perf_counter_ns()
        fn(i)
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def main(args: argparse.Namespace):
    logging.getLogger("anchorvla").setLevel(
        logging.CRITICAL
    )  # random states latch faults; only time counts here
    n_ticks = args.ticks
    rng = np.random.default_rng(0)
    desired, base, measured = _inputs(n_ticks, rng)
    config = SafetyConfig()
    limits = Limits.from_config(config, SO101_JOINTS)
    dt = 1 / 15
    n = len(SO101_JOINTS)
    zeros = np.zeros(n)
    health = {
        "loads": np.full(n, 0.1),
        "temperatures_c": np.full(n, 35.0),
        "voltages_v": np.full(n, 12.0),
        "error_bits": np.zeros(n, dtype=np.int64),
    }
    states = [
        ArmState(i * 66_666_667, SO101_JOINTS, measured[i], zeros, health_t_ns=i, **health)
        for i in range(n_ticks)
    ]
    base_states = [BaseState(i * 66_666_667, np.zeros(3), 0.0, np.zeros(3), 0.0) for i in range(n_ticks)]
    frames = {"wrist": Frame(0, "wrist", np.zeros((1, 1, 3), dtype=np.uint8))}
    commands = [
        Command(i * 66_666_667, SO101_JOINTS, desired[i], BaseVelocity(*base[i])) for i in range(n_ticks)
    ]

    def bare(i):
        np.clip(desired[i], limits.soft_lo, limits.soft_hi)

    prev = {"p": Previous(np.zeros(n), np.zeros(n), np.zeros(3))}

    def limiter(i):
        out = limit_command(desired[i], base[i], measured[i], health["loads"], prev["p"], dt, limits)
        prev["p"] = out.as_previous(prev["p"], dt)

    layer = SafetyLayer(config, SO101_JOINTS, dt)
    layer.seed(states[0])

    def full(i):
        t = states[i].t_ns
        layer.observe(t, states[i], base_states[i], {"wrist": Frame(t, "wrist", frames["wrist"].image)})
        layer.filter(commands[i], states[i], dt)
        if layer.faulted:  # random states may look stalled; the tick's cost is what is measured
            layer.reset()

    rows = []
    for name, fn in (
        ("np.clip to limits (bare)", bare),
        ("limit_command", limiter),
        ("SafetyLayer observe+filter", full),
    ):
        fn(0)  # warm
        ms = _time(fn, n_ticks)
        rows.append(
            {
                "row": name,
                "p50_ms": float(np.median(ms)),
                "p99_ms": float(np.percentile(ms, 99)),
                "max_ms": float(ms.max()),
            }
        )
    print(f"{'per tick':<30}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    print("-" * 60)
    for r in rows:
        print(f"{r['row']:<30}{r['p50_ms']:>10.4f}{r['p99_ms']:>10.4f}{r['max_ms']:>10.4f}")
    full_p50 = rows[-1]["p50_ms"]
    ok = full_p50 < BUDGET_MS
    print(
        f"\nenvelope median {full_p50:.4f} ms per tick ({'within' if ok else 'OVER'} the {BUDGET_MS} ms budget); "
        f"{full_p50 / rows[0]['p50_ms']:.0f}x a bare clip"
    )
    return {"ticks": n_ticks, "rows": rows, "budget_ms": BUDGET_MS}, ok
