"""Run statistics shared by the two loops, the periodic log line, and the JSON summary."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from onboard.timing import Samples

log = logging.getLogger("anchorvla")


@dataclass
class RunStats:
    ticks: int = 0
    overruns: int = 0
    underruns: int = 0
    chunks: int = 0
    inference_failures: int = 0
    stale_observations: int = 0
    device_errors: int = 0
    lateness_ms: Samples = field(default_factory=Samples)
    tick_compute_ms: Samples = field(default_factory=Samples)
    inference_ms: Samples = field(default_factory=Samples)
    started_ns: int = 0
    ended_ns: int = 0

    def control_hz(self) -> float:
        elapsed = (self.ended_ns - self.started_ns) / 1e9
        return round(self.ticks / elapsed, 3) if elapsed > 0 else 0.0


def summary(stats: RunStats, stale_dropped: int, safety: dict[str, int], exit_reason: str) -> dict:
    return {
        "ticks": stats.ticks,
        "control_hz": stats.control_hz(),
        "lateness_ms": stats.lateness_ms.summary(),
        "overruns": stats.overruns,
        "tick_compute_ms": stats.tick_compute_ms.summary(),
        "chunks": stats.chunks,
        "inference_ms": stats.inference_ms.summary(),
        "underruns": stats.underruns,
        "stale_actions_dropped": stale_dropped,
        "inference_failures": stats.inference_failures,
        "stale_observations": stats.stale_observations,
        "device_errors": stats.device_errors,
        "safety": safety,
        "exit_reason": exit_reason,
    }


def write_summary(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def format_summary(data: dict) -> str:
    """A short human-readable table of the summary."""
    lat, comp, inf = data["lateness_ms"], data["tick_compute_ms"], data["inference_ms"]
    s = data["safety"]
    rows = [
        ("ticks", f"{data['ticks']} at {data['control_hz']} Hz"),
        ("lateness ms p50/p99/max", f"{lat['p50']:.3f} / {lat['p99']:.3f} / {lat['max']:.3f}"),
        ("tick compute ms p50/p99/max", f"{comp['p50']:.3f} / {comp['p99']:.3f} / {comp['max']:.3f}"),
        ("inference ms p50/p99/max", f"{inf['p50']:.1f} / {inf['p99']:.1f} / {inf['max']:.1f}"),
        ("chunks / failures", f"{data['chunks']} / {data['inference_failures']}"),
        ("overruns / underruns", f"{data['overruns']} / {data['underruns']}"),
        ("stale actions dropped", str(data["stale_actions_dropped"])),
        (
            "safety clamped/rejected/faults/stops",
            f"{s['clamped']} / {s['rejected']} / {s['faults']} / {s['safe_stops']}",
        ),
        ("exit", data["exit_reason"]),
    ]
    task = data.get("task")  # the emulated robot's task (sim/session.py)
    if task is not None:
        outcome = f"success in {task['time_to_success_s']} s" if task["success"] else "no success"
        rows.append((f"task {task['task']}", f"{outcome} ({task['detail']})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
