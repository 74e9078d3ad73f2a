"""`anchorvla bench service`: what running as a service costs the fast loop. In one run, the same stand-in
controller (configs/standin.yaml at 15 Hz) plain, with episode recording (images on), and with recording plus the
rerun live view (written to an .rrd); the cost of the per-tick listeners (recorder, live view) is timed
directly, and tick lateness is compared with the plain run. The recorder's listeners only enqueue (rows and files
are made on its writer thread); a recording that stopped during the run (its writer fell behind) fails the bench."""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.runtime import Devices, run_event_loop
from onboard.service import Notifier, Service
from onboard.timing import Samples

SIM = Path(__file__).resolve().parents[1] / "configs" / "standin.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each measurement")


def _timed(listeners: list, samples: Samples):
    def call_all(*args):
        start = time.perf_counter_ns()
        for listener in listeners:
            listener(*args)
        samples.add((time.perf_counter_ns() - start) / 1e6)

    return call_all


def measure(overrides: dict, seconds: float) -> dict:
    config = load_config(SIM, {"service": {"start_idle": False, "control": {"enabled": False}}, **overrides})
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    service = Service(config, devices, build_engine(config), Notifier({}))
    fast, slow = service.runtime.fast, service.runtime.slow
    tick_ms, chunk_ms = Samples(), Samples()
    fast.tick_listeners = [_timed(list(fast.tick_listeners), tick_ms)]
    slow.chunk_listeners = [_timed(list(slow.chunk_listeners), chunk_ms)]
    result = run_event_loop(service.run(seconds))
    return {
        "control_hz": result["control_hz"],
        "overruns": result["overruns"],
        "lateness_ms": result["lateness_ms"],
        "tick_compute_ms": result["tick_compute_ms"],
        "tick_listeners_ms": tick_ms.summary(),
        "chunk_listeners_ms": chunk_ms.summary(),
        "chunks": result["chunks"],
        "recording": None if service.recorder is None else service.recorder.status(),
    }


def main(args: argparse.Namespace):
    out = Path(tempfile.mkdtemp(prefix="bench-service-"))
    recording = {"recording": {"enabled": True, "root": str(out / "episodes"), "images": True}}
    settings = [("plain", {}), ("recording", recording)]
    if importlib.util.find_spec("rerun") is not None:
        settings.append(
            (
                "recording+liveview",
                {**recording, "telemetry": {"liveview": {"enabled": True, "save": str(out / "live.rrd")}}},
            )
        )
    else:
        print(
            "rerun-sdk not installed: the live view is not measured (pip install 'anchorvla-onboard[liveview]')"
        )
    figures = {name: measure(overrides, args.seconds) for name, overrides in settings}
    plain_p99 = figures["plain"]["lateness_ms"]["p99"]
    header = f"{'setting':20s} {'Hz':>7s} {'overruns':>8s} {'late p50/p99 ms':>16s} {'tick listeners p50/p99/max ms':>30s} {'chunk listeners p50/max ms':>27s}"
    print(header)
    for name, f in figures.items():
        lat, tl, cl = f["lateness_ms"], f["tick_listeners_ms"], f["chunk_listeners_ms"]
        print(
            f"{name:20s} {f['control_hz']:7.2f} {f['overruns']:8d} {lat['p50']:7.3f}/{lat['p99']:7.3f} "
            f"{tl['p50']:10.3f}/{tl['p99']:7.3f}/{tl['max']:7.3f}    {cl['p50']:10.3f}/{cl['max']:7.3f}"
        )
        f["lateness_p99_vs_plain"] = round(lat["p99"] / plain_p99, 2) if plain_p99 > 0 else None
    period_ms = 1000.0 / 15.0
    stopped = {
        n: f["recording"]["reason"] for n, f in figures.items() if (f["recording"] or {}).get("reason")
    }
    for name, reason in stopped.items():
        print(f"{name}: the recording stopped during the run: {reason}")
    ok = not stopped and all(
        f["tick_listeners_ms"]["p99"] < 0.1 * period_ms and f["overruns"] <= 1 for f in figures.values()
    )
    print(
        f"ok: every setting's tick listeners p99 under 10% of the {period_ms:.1f} ms period, at most one overrun, "
        "no recording stopped"
        if ok
        else "NOT ok: see the table"
    )
    return figures, ok
