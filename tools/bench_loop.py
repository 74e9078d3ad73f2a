"""`anchorvla bench loop`: the fast loop's timing at 15, 50 and 100 Hz while the slow loop runs inference
back to back (stand-in engine burning a core), beside a bare time.sleep-to-deadline loop in the same run."""

from __future__ import annotations

import argparse
import time

from onboard.config import Config
from onboard.devices import build_engine
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinArm, StandinBase, StandinCamera
from onboard.telemetry import RunStats
from onboard.timing import sleep_until


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--rates", type=float, nargs="+", default=[15.0, 50.0, 100.0])
    parser.add_argument("--compute-ms", type=float, default=100.0, help="stand-in inference time per chunk")
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=20,
        help="also measure the controller at this SCHED_FIFO priority (0: skip)",
    )


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


def controller_loop(rate_hz: float, seconds: float, compute_ms: float, realtime_priority: int = 0) -> dict:
    config = Config.model_validate(
        {
            "control": {"rate_hz": rate_hz},
            "service": {"realtime_priority": realtime_priority},
            # H=1 and a wide start margin keep inference running back to back.
            "policy": {
                "execute_horizon": 1,
                "standin": {"compute_ms": compute_ms, "compute": "cpu", "chunk_length": 50},
            },
        }
    )
    joints = tuple(config.robot.arm.joint_names)
    devices = Devices(
        StandinArm(joints), StandinBase(), [StandinCamera(c.name) for c in config.robot.cameras]
    )
    engine = build_engine(config)
    runtime = Runtime(config, devices, engine)
    return run_event_loop(runtime.run(seconds))


def _row(rate: float, loop: str, ticks: int, lateness: dict, overruns: int, chunks: int) -> dict:
    return {
        "rate_hz": rate,
        "loop": loop,
        "ticks": ticks,
        "lateness_ms": lateness,
        "overruns": overruns,
        "chunks": chunks,
    }


def measure(rate: float, args: argparse.Namespace) -> list[dict]:
    bare = bare_sleep_loop(rate, args.seconds)
    rows = [_row(rate, "time.sleep (bare)", bare.ticks, bare.lateness_ms.summary(), bare.overruns, 0)]
    variants = [("controller + inference", 0)]
    if args.realtime_priority:
        variants.append((f"controller + SCHED_FIFO {args.realtime_priority}", args.realtime_priority))
    for name, priority in variants:
        s = controller_loop(rate, args.seconds, args.compute_ms, priority)
        rows.append(_row(rate, name, s["ticks"], s["lateness_ms"], s["overruns"], s["chunks"]))
    return rows


def main(args: argparse.Namespace):
    from threadpoolctl import threadpool_limits

    rows = []
    # Inference gets one core of the two (as ORT's intra-op threads are sized on the robot), the loop the other.
    with threadpool_limits(limits=1):
        for rate in args.rates:
            rows.extend(measure(rate, args))
    header = f"{'rate Hz':>7}  {'loop':<30}{'ticks':>7}{'late p50 ms':>13}{'late p99 ms':>13}{'late max ms':>13}{'overruns':>10}{'chunks':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        lat = r["lateness_ms"]
        print(
            f"{r['rate_hz']:>7.0f}  {r['loop']:<30}{r['ticks']:>7}{lat['p50']:>13.3f}{lat['p99']:>13.3f}{lat['max']:>13.3f}{r['overruns']:>10}{r['chunks']:>8}"
        )
    ok = all(r["overruns"] == 0 for r in rows if r["loop"].startswith("controller"))
    return {"seconds": args.seconds, "compute_ms": args.compute_ms, "rows": rows}, ok
