"""`anchorvla bench loop`: the fast loop's timing at 15, 50 and 100 Hz while the slow loop runs inference
back to back (stand-in engine burning a core), beside a bare time.sleep-to-deadline loop in the same run."""

from __future__ import annotations

import argparse
import time

from onboard.config import Config
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinArm, StandinBase, StandinCamera, StandinEngine
from onboard.timing import Samples, sleep_until
from onboard.telemetry import RunStats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--rates", type=float, nargs="+", default=[15.0, 50.0, 100.0])
    parser.add_argument("--compute-ms", type=float, default=100.0, help="stand-in inference time per chunk")


def bare_sleep_loop(rate_hz: float, seconds: float) -> RunStats:
    stats = RunStats()
    period = round(1e9 / rate_hz)
    deadline = time.monotonic_ns() + period
    stats.started_ns = deadline
    end = deadline + int(seconds * 1e9)
    while deadline < end:
        sleep_until(deadline)
        start = time.monotonic_ns()
        stats.lateness_ms.add((start - deadline) / 1e6)
        if start >= deadline + period:
            stats.overruns += 1
            deadline += (start - deadline) // period * period
        stats.ticks += 1
        deadline += period
    stats.ended_ns = time.monotonic_ns()
    return stats


def controller_loop(rate_hz: float, seconds: float, compute_ms: float) -> dict:
    config = Config.model_validate(
        {
            "control": {"rate_hz": rate_hz},
            # H=1 and a wide start margin keep inference running back to back.
            "policy": {"execute_horizon": 1, "standin": {"compute_ms": compute_ms, "compute": "cpu", "chunk_length": 50}},
        }
    )
    joints = tuple(config.robot.arm.joint_names)
    devices = Devices(StandinArm(joints), StandinBase(), [StandinCamera(c.name) for c in config.robot.cameras])
    s = config.policy.standin
    engine = StandinEngine(joints, round(1e9 / rate_hz), compute_ms=s.compute_ms, compute=s.compute, chunk_length=s.chunk_length)
    runtime = Runtime(config, devices, engine)
    return run_event_loop(runtime.run(seconds))


def main(args: argparse.Namespace):
    rows = []
    for rate in args.rates:
        bare = bare_sleep_loop(rate, args.seconds)
        ctl = controller_loop(rate, args.seconds, args.compute_ms)
        rows.append({"rate_hz": rate, "loop": "time.sleep (bare)", "ticks": bare.ticks, "lateness_ms": bare.lateness_ms.summary(), "overruns": bare.overruns, "chunks": 0})
        rows.append({"rate_hz": rate, "loop": "controller + inference", "ticks": ctl["ticks"], "lateness_ms": ctl["lateness_ms"], "overruns": ctl["overruns"], "chunks": ctl["chunks"]})
    header = f"{'rate Hz':>7}  {'loop':<24}{'ticks':>7}{'late p50 ms':>13}{'late p99 ms':>13}{'late max ms':>13}{'overruns':>10}{'chunks':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lat = r["lateness_ms"]
        print(f"{r['rate_hz']:>7.0f}  {r['loop']:<24}{r['ticks']:>7}{lat['p50']:>13.3f}{lat['p99']:>13.3f}{lat['max']:>13.3f}{r['overruns']:>10}{r['chunks']:>8}")
    ok = all(r["overruns"] == 0 for r in rows if r["loop"] != "time.sleep (bare)")
    return {"seconds": args.seconds, "compute_ms": args.compute_ms, "rows": rows}, ok
