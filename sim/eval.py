"""`anchorvla eval --config configs/sim.yaml --task T --episodes N [--variant SPEC ...] [--json PATH]`

Closed-loop evaluation of the configured policy on the emulated robot's tasks: success rate, time to success,
smoothness (RMS jerk of the arm commands, peak base acceleration of the base commands), safety interventions,
why the failed episodes failed (the task's reason, e.g. 'touched the obstacle', or 'timed out') and the timing
figures, for one or several variants of the controller side by side, all measured in one run.

How it runs: the controller's own code (FastLoop.tick, SlowLoop's steps and start planning, ChunkSchedule,
the safety layer, the engine, the residual) in lockstep on a virtual clock against in-process emulated devices
(sim/lockstep.py) stepping one shared World, with no pty, DDS or real-time waits. Each inference's latency
is its measured wall time (or `--latency-ms`), mapped onto the virtual clock (the chunk is served from the first tick
after it would have arrived), so a slower engine shows as stale actions and underruns. Real-time runs, with the pty bus, DDS and
the tick lateness figures, are `anchorvla run`.

A variant is a comma-separated list of settings: H=<ticks> (policy.execute_horizon), residual=on|off,
blend=none|linear|exponential (policy.blending.mode), late=drop|shift (policy.late_chunks), roll=on|off (policy.roll_forward),
rtc=on|off (policy.prefix_conditioning: real-time chunking, a bundle exported with prefix inputs), bundle=<dir> (policy.bundle: another policy, e.g. one of
policies/options/), engine=onnxruntime|torch (policy.engine; torch runs a checkpoint dir given as bundle=) and
name=<label> (the row's name). Without --variant the config's own settings are one row.

A variant may also change the world (sim/world_variants.py, all off by default): instruction=other (the colour
tasks' instruction names the distractor, which becomes the goal: the language check), images=blank (black camera
frames: the vision check), and drift: slip=<m/s> (the body slips over the ground, unmeasured, so the arm's target
moves in the body frame under a chunk), nudge=<m> (the goal object moved once mid-episode), compliance=<deg>
(the arm's servos yield under gravity, this far at full load) and tail=<sigma> (each inference's latency lognormal
around --latency-ms, which it needs). Each is drawn from the episode's seed: every variant and run sees the same
drift on the same episode.

Memory per variant: the size of the graphs the engine loaded, and the growth of this process's resident set from
building the engine to the end of its episodes (a figure of the whole process: allocator reuse makes it noisy).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anchorvla.errors import UserError
from sim.world_variants import UNCHANGED, EpisodeDrift, WorldVariant

if TYPE_CHECKING:
    from sim.tasks import Task

CAPTION = (
    "lockstep on a virtual clock: FastLoop.tick/ChunkSchedule/safety/engine against in-process emulated "
    "devices (no pty, no DDS); inference latency = measured wall time of each call"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, type=Path, help="the emulated robot's config (configs/sim.yaml)"
    )
    parser.add_argument(
        "--task", required=True,
        help="touch | reach | lift | all, their colour variants touch_color | reach_color | lift_color | color "
        "(no goal in the proprio: sim/tasks.py), or a comma-separated list",
    )  # fmt: skip
    parser.add_argument("--episodes", required=True, type=int, help="episodes per task and variant")
    parser.add_argument(
        "--variant", action="append", default=None, metavar="SPEC",
        help="e.g. 'H=2', 'H=5,residual=off', 'blend=none'; repeat for rows side by side",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=10_000, help="first episode seed (recordings use 0..)")
    parser.add_argument(
        "--latency-ms", type=float, default=None,
        help="virtual time each inference takes (default: its measured wall time; fix it on a loaded machine)",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=None,
        help="write every figure as JSON here (each row's world checks and drift under 'world')",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="variants evaluated at once, each in a process of its own (default 1); the outcomes do not change "
        "with --latency-ms set, the measured inference times share the cores",
    )  # fmt: skip


WORLD_KEYS = {"slip": "slip_mps", "nudge": "nudge_m", "compliance": "compliance_deg", "tail": "latency_sigma"}


def _magnitude(value: str) -> float | None:
    """A drift's size: a finite number >= 0, else None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_variant(spec: str) -> tuple[str, dict, WorldVariant]:
    """'H=2,residual=off' -> (row label, config overrides, what it changes in the world). The label is `name=` or
    else the spec itself."""
    policy: dict = {}
    world: dict = {}
    label = spec or "config"
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        key, _, raw = item.partition("=")
        key, value = key.strip().lower(), raw.strip().lower()
        if key in WORLD_KEYS and _magnitude(value) is not None:
            world[WORLD_KEYS[key]] = _magnitude(value)
        elif key == "instruction" and value in ("same", "other"):
            world["instruction_other"] = value == "other"
        elif key == "images" and value in ("on", "blank"):
            world["blank_images"] = value == "blank"
        elif key == "h" and value.isdigit() and int(value) >= 1:
            policy["execute_horizon"] = int(value)
        elif key == "residual" and value in ("on", "off"):
            policy["residual"] = value == "on"
        elif key == "blend" and value in ("none", "linear", "exponential"):
            policy["blending"] = {"mode": value}
        elif key == "late" and value in ("drop", "shift"):
            policy["late_chunks"] = value
        elif key == "roll" and value in ("on", "off"):
            policy["roll_forward"] = value == "on"
        elif key == "rtc" and value in ("on", "off"):
            policy["prefix_conditioning"] = value == "on"
        elif key == "engine" and value in ("onnxruntime", "torch"):
            policy["engine"] = value
        elif key == "bundle" and raw.strip():
            path = Path(raw.strip()).resolve()
            if not path.is_dir():
                raise UserError(f"--variant {spec!r}: bundle {raw.strip()} is not a directory")
            policy["bundle"] = path
        elif key == "name" and raw.strip():
            label = raw.strip()
        else:
            raise UserError(
                f"--variant {spec!r}: '{item}' not understood (use H=<n>, residual=on|off, "
                "blend=none|linear|exponential, late=drop|shift, roll=on|off, rtc=on|off, bundle=<dir>, engine=onnxruntime|torch, name=<label>; world: instruction=same|other, "
                "images=on|blank, slip=<m/s>, nudge=<m>, compliance=<deg>, tail=<sigma>)"
            )
    return label, {"policy": policy}, WorldVariant(**world)


def resident_mb() -> float:
    """This process's resident set size in MB (Linux /proc)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def graphs_mb(engine) -> float | None:
    """Size of the graph files the engine runs (None for an engine without files, e.g. torch)."""
    paths = getattr(engine, "graph_paths", None)
    return round(sum(p.stat().st_size for p in paths.values()) / 2**20, 2) if paths else None


@dataclass
class EpisodeResult:
    task: str
    success: bool
    time_to_success_s: float | None
    ticks: int
    jerk_rms: float  # rad/s^3, RMS over ticks and joints of the commanded arm positions' third difference
    peak_base_accel: float  # m/s^2, largest change of the commanded planar base velocity per second
    interventions: int  # safety: commands clamped or rejected, faults latched, holds begun
    underruns: int
    stale_dropped: int
    failure: str | None  # the task's reason ('touched the obstacle') or 'timed out'; None: a success
    inference_ms: list[float] = field(default_factory=list)
    tick_compute_ms: list[float] = field(default_factory=list)
    seam_jerk: list[float] = field(default_factory=list)  # rad/s^3 at ticks where the plan's chunk changed
    inside_jerk: list[float] = field(default_factory=list)  # rad/s^3 at the other ticks


def sim_cameras(config) -> list[tuple[str, str, int, int, int]]:
    cams = []
    for cam in config.robot.cameras:
        if cam.driver != "synthetic":
            raise UserError(
                f"robot.cameras[{cam.name}].driver is '{cam.driver}': eval runs the emulated robot, whose "
                "cameras are 'synthetic' (use configs/sim.yaml)"
            )
        cams.append((cam.name, cam.view or cam.name, cam.width, cam.height, cam.fps))
    return cams


def smoothness(arm_commands: np.ndarray, base_commands: np.ndarray, dt_s: float) -> tuple[float, float]:
    """(RMS jerk of the arm commands in rad/s^3, peak planar base acceleration in m/s^2)."""
    jerk = np.diff(arm_commands, n=3, axis=0) / dt_s**3 if len(arm_commands) > 3 else np.zeros((1, 1))
    accel = np.diff(base_commands[:, :2], axis=0) / dt_s if len(base_commands) > 1 else np.zeros((1, 2))
    return float(np.sqrt(np.mean(jerk**2))), float(np.max(np.linalg.norm(accel, axis=1)))


def seam_and_inside_jerk(
    arm_commands: np.ndarray, chunk_ids: list, dt_s: float
) -> tuple[list[float], list[float]]:
    """Each tick's jerk (RMS over joints of the commanded positions' third difference ending at that tick), split
    into the ticks at a chunk seam (the planned action came from another chunk than the tick before's, both
    planned) and the others."""
    if len(arm_commands) <= 3:
        return [], []
    jerk = np.sqrt(np.mean((np.diff(arm_commands, n=3, axis=0) / dt_s**3) ** 2, axis=1))
    seams, inside = [], []
    for k in range(3, len(arm_commands)):
        seam = chunk_ids[k] is not None and chunk_ids[k - 1] is not None and chunk_ids[k] != chunk_ids[k - 1]
        (seams if seam else inside).append(float(jerk[k - 3]))
    return seams, inside


def run_episode(
    config,
    engine,
    robot,
    task_name: str,
    seed: int,
    latency_ms: float | None = None,
    on_tick: Callable[[Task], None] | None = None,
    variant: WorldVariant = UNCHANGED,
) -> EpisodeResult:
    """One episode of the controller's loops in lockstep with the emulated devices: each tick, a chunk whose
    virtual arrival time has come is delivered, the fast loop ticks, and the slow loop's `begin` starts the next
    inference when its planned start falls before the next tick (its latency is the call's wall time, or
    `latency_ms`, on the virtual clock). `on_tick(task)` is called every tick just before the fast loop's, with
    this tick's camera frames rendered (a recorder's hook). `variant`: what changes in the world (checks, drift)."""
    from onboard.loops import build_loops
    from sim.session import GoalEngine

    task = robot.start_episode(task_name, seed)
    if variant.instruction_other:
        task.name_other(robot.world)
    if variant.latency_sigma > 0 and latency_ms is None:
        raise UserError("tail=<sigma> draws each inference's latency around --latency-ms: give --latency-ms")
    # Each episode draws its own noise, so its outcome does not depend on which episodes ran before it in the
    # same engine (another task, other seeds), and every variant samples the same noise on the same episode.
    # (An engine without noise, the stand-in, has nothing to restart.)
    if hasattr(engine, "reseed"):
        engine.reseed(seed)
    engine = GoalEngine.for_task(engine, task, robot.world)
    loops = build_loops(
        config=config, arm=robot.arm, base=robot.base, cameras=robot.cameras, engine=engine,
        instruction=task.instruction, stop_sequences=False,
    )  # fmt: skip
    fast, slow, safety, stats = loops.fast, loops.slow, loops.safety, loops.stats
    safety.seed(robot.arm.read_state())  # as the runtime does: the envelope starts from the measured pose
    period = fast.period_ns
    drift = EpisodeDrift(variant, robot, task, seed, period / 1e9)
    pending = None  # (tick at which the chunk arrives, observation, chunk, latency ns)
    arm_cmds, base_cmds = [], []
    chunk_ids: list = []  # per tick: which chunk the planned action came from (None: nothing planned)
    wall_inference_ms = []  # measured wall time of each call (the report's figure)
    success_tick = None
    failure = "timed out"
    try:
        for tick in range(task.max_steps):
            now = robot.clock.now_ns
            fast.next_deadline_ns = now
            drift.before_tick(tick)
            if pending is not None and pending[0] <= now:  # the chunk arrives
                slow.deliver(*pending[1:], now)
                pending = None
            for cam in robot.cameras:  # the frames of this tick, rendered as the camera threads would
                cam.latest()
            if on_tick is not None:
                on_tick(task)
            t0 = time.perf_counter_ns()
            fast.tick(now)
            stats.tick_compute_ms.add((time.perf_counter_ns() - t0) / 1e6)
            stats.ticks += 1
            arm_cmds.append(fast.last_command.arm_positions)
            base_cmds.append(fast.last_command.base.as_array())
            planned = fast.last_decision.planned
            chunk_ids.append(None if planned is None else id(planned.chunk))
            if pending is None:
                # The slow loop starts at its planned time, which may fall between this tick and the next.
                start_at = slow.next_start_ns()
                begin = now if start_at is None else max(now, start_at)
                obs = slow.begin(begin) if begin < now + period else None
                if obs is not None:
                    t0 = time.perf_counter_ns()
                    try:
                        chunk = engine.infer(obs)
                    except UserError:
                        raise
                    except Exception as exc:  # as the slow loop: an engine failure holds the arm and retries
                        slow.failed(exc)
                    else:
                        latency = time.perf_counter_ns() - t0
                        wall_inference_ms.append(latency / 1e6)
                        if latency_ms is not None:
                            latency = drift.latency_ns(int(latency_ms * 1e6))
                        ticks_until_ready = math.ceil((begin + latency - now) / period)
                        pending = (now + max(1, ticks_until_ready) * period, obs, chunk, latency)
            robot.clock.advance(period)
            task.update(robot.world)
            status = task.status(robot.world)
            if status.success:
                success_tick, failure = tick + 1, None
                break
            if status.failed:
                failure = status.detail
                break
    finally:
        slow.close()
    jerk, accel = smoothness(np.asarray(arm_cmds), np.asarray(base_cmds), period / 1e9)
    seam_jerk, inside_jerk = seam_and_inside_jerk(np.asarray(arm_cmds), chunk_ids, period / 1e9)
    counters = safety.counters
    return EpisodeResult(
        task=task_name,
        success=success_tick is not None,
        time_to_success_s=None if success_tick is None else success_tick * period / 1e9,
        ticks=stats.ticks,
        jerk_rms=jerk,
        peak_base_accel=accel,
        interventions=counters.clamped + counters.rejected + counters.faults + counters.holds,
        underruns=stats.underruns,
        stale_dropped=loops.schedule.stale_dropped,
        failure=failure,
        inference_ms=wall_inference_ms,
        tick_compute_ms=stats.tick_compute_ms.recent(len(stats.tick_compute_ms)),
        seam_jerk=seam_jerk,
        inside_jerk=inside_jerk,
    )


def summarize(results: list[EpisodeResult]) -> dict:
    times = [r.time_to_success_s for r in results if r.success]
    inference = [v for r in results for v in r.inference_ms]
    compute = [v for r in results for v in r.tick_compute_ms]

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "episodes": len(results),
        "success_rate": round(sum(r.success for r in results) / len(results), 3),
        "time_to_success_s_median": round(float(np.median(times)), 3) if times else None,
        "jerk_rms_median": round(float(np.median([r.jerk_rms for r in results])), 2),
        "peak_base_accel_max": round(max(r.peak_base_accel for r in results), 3),
        "interventions_per_episode": round(float(np.mean([r.interventions for r in results])), 2),
        "underruns": sum(r.underruns for r in results),
        "stale_actions_dropped": sum(r.stale_dropped for r in results),
        "inference_ms_p50": pct(inference, 50),
        "inference_ms_p99": pct(inference, 99),
        "tick_compute_ms_p50": pct(compute, 50),
        "tick_compute_ms_p99": pct(compute, 99),
        "failures": dict(Counter(r.failure for r in results if r.failure is not None).most_common()),
        "seam_jerk_median": pct([v for r in results for v in r.seam_jerk], 50),
        "inside_jerk_p95": pct([v for r in results for v in r.inside_jerk], 95),
    }


def format_table(rows: list[dict], caption: str = CAPTION) -> str:
    columns = [
        ("variant", "variant"), ("task", "task"), ("success", "success_rate"), ("t_succ s", "time_to_success_s_median"),
        ("jerk rad/s3", "jerk_rms_median"), ("base acc", "peak_base_accel_max"),
        ("interv/ep", "interventions_per_episode"), ("underruns", "underruns"), ("stale", "stale_actions_dropped"),
        ("infer p50/p99 ms", None), ("tick p50/p99 ms", None), ("runs", "engine_variant"), ("graphs MB", "graphs_mb"),
        ("RSS +MB", "rss_growth_mb"),
    ]  # fmt: skip

    def cell(row, key, title):
        if title.startswith("infer"):
            return f"{row['inference_ms_p50']}/{row['inference_ms_p99']}"
        if title.startswith("tick"):
            return f"{row['tick_compute_ms_p50']}/{row['tick_compute_ms_p99']}"
        value = row[key]
        if key == "success_rate":
            return f"{value * 100:.0f}% of {row['episodes']}"
        return "-" if value is None else str(value)

    table = [[title for title, _ in columns]] + [[cell(r, k, t) for t, k in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in table]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:], f"({caption})"])


def evaluate_variant(
    config_path, spec: str, names: list[str], episodes: int, seed: int, latency_ms: float | None
) -> list[dict]:
    """The rows of one variant (`parse_variant`): one per task, and 'all' over several, each episode at seeds
    seed, seed + 1, ...; a progress line per task."""
    from onboard.config import load_config
    from onboard.devices import build_engine
    from sim.lockstep import SimRobot

    label, overrides, world = parse_variant(spec)
    config = load_config(config_path, overrides)
    robot = SimRobot(sim_cameras(config))
    rss_before = resident_mb()
    engine = build_engine(config)
    engine.warmup()
    # The bundle variant the engine chose (precision auto may fall back to fp32 when int8 failed verify).
    engine_row = {"engine_variant": getattr(engine, "variant", "torch"), "graphs_mb": graphs_mb(engine)}
    engine_row["world"] = world.changed()  # in the JSON: the checks and drift the row ran with
    rows, all_results = [], []
    try:
        for name in names:
            results = [
                run_episode(config, engine, robot, name, seed + k, latency_ms, variant=world)
                for k in range(episodes)
            ]
            all_results += results
            engine_row["rss_growth_mb"] = round(resident_mb() - rss_before, 1)
            rows.append(dict(variant=label, task=name, **summarize(results), **engine_row))
            failures = ", ".join(f"{why} {n}" for why, n in rows[-1]["failures"].items())
            print(
                f"{label:>16}  {name:<6} success {rows[-1]['success_rate'] * 100:.0f}%"
                + (f" (failed: {failures})" if failures else ""),
                flush=True,
            )
    finally:
        engine.close()
    if len(names) > 1:
        rows.append(dict(variant=label, task="all", **summarize(all_results), **engine_row))
    return rows


def _evaluate_all(args: argparse.Namespace, specs: list[str], names: list[str]) -> list[list[dict]]:
    """Each variant's rows, in the order of `specs`; with --jobs > 1 the variants run in spawned worker
    processes (every episode is a function of its seed and the virtual clock, so the outcomes are the same)."""
    shared = (names, args.episodes, args.seed, args.latency_ms)
    if args.jobs == 1 or len(specs) == 1:
        return [evaluate_variant(args.config, spec, *shared) for spec in specs]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(min(args.jobs, len(specs)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(evaluate_variant, args.config, spec, *shared) for spec in specs]
        return [f.result() for f in futures]


def main(args: argparse.Namespace) -> int:
    from sim.tasks import task_names

    if args.episodes < 1:
        raise UserError("--episodes must be >= 1")
    if args.latency_ms is not None and args.latency_ms < 0:
        raise UserError(f"--latency-ms must be >= 0 (got {args.latency_ms})")
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1 (got {args.jobs})")
    names = task_names(args.task)
    specs = args.variant or [""]
    for spec in specs:
        parse_variant(spec)  # every spec understood before the first episode runs
    rows = [row for variant_rows in _evaluate_all(args, specs, names) for row in variant_rows]
    caption = (
        CAPTION
        if args.latency_ms is None
        else CAPTION.replace(
            "measured wall time of each call",
            f"{args.latency_ms:g} ms of virtual time per call (wall time measured)",
        )
    )
    print(format_table(rows, caption))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"caption": caption, "rows": rows}, indent=2) + "\n")
    return 0
