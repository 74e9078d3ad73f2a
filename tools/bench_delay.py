"""`anchorvla bench delay`: closed-loop success, time and smoothness against inference latency, in one run.

For each latency (virtual time per inference, as `anchorvla eval --latency-ms`) and each variant (eval's variant
specs: how late chunks are served, the rolled-forward state, the residual, drift in the world), the tasks run at
the same seeds through `sim.eval.evaluate_variant`. The table has, per latency and variant, over all tasks: success,
median time to success, median RMS jerk of the arm commands, the median jerk at chunk seams beside the 95th
percentile of the jerk inside chunks (a seam no rougher than that is smooth), and underruns. `--plot` draws success
and seam jerk against latency (PNG, needs matplotlib).

The real-time chunking rows (`rtc=on`, policy.prefix_conditioning) need a bundle exported with prefix inputs
(`--bundle`, or the config's): among the default variants they are left out, with a note, where the bundle has
none; asked for by `--variant`, such a bundle is refused before anything runs. With an RTC row the bench also times
the inference with and without a prefix on the same engine (`prefix_overhead`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

LATENCIES_MS = (60.0, 130.0, 200.0, 300.0, 400.0, 530.0)
VARIANTS = ("name=drop,late=drop", "name=shift,late=shift", "name=shift+residual,late=shift,residual=on",
            "name=shift+slip,late=shift,slip=0.02", "name=drop+slip,late=drop,slip=0.02")  # fmt: skip
RTC_VARIANTS = ("name=drop+rtc,late=drop,rtc=on", "name=shift+rtc,late=shift,rtc=on")
OVERHEAD_CALLS = 200  # inferences timed with and without a prefix, alternating
COLUMNS = (
    ("latency ms", "latency_ms"), ("variant", "variant"), ("success", "success_rate"),
    ("t_succ s", "time_to_success_s_median"), ("jerk", "jerk_rms_median"), ("seam jerk", "seam_jerk_median"),
    ("inside p95", "inside_jerk_p95"), ("underruns", "underruns"),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("configs/sim.yaml"), help="the emulated robot's config")
    parser.add_argument("--task", default="all", help="tasks, as eval's --task (default: all)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task, latency and variant")
    parser.add_argument("--seed", type=int, default=30_000, help="first episode seed (seeds no policy trained on)")
    parser.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES_MS), metavar="MS")
    parser.add_argument("--variant", action="append", default=None, metavar="SPEC",
                        help=f"eval variant specs (repeat); default: {' '.join(VARIANTS + RTC_VARIANTS)}")  # fmt: skip
    parser.add_argument("--bundle", type=Path, default=None,
                        help="the bundle every row runs (default: the config's policy.bundle)")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=None, help="draw success and seam jerk vs latency (PNG)")


def format_table(rows: list[dict]) -> str:
    def cell(row, key):
        value = row.get(key)
        if key == "success_rate":
            return f"{value * 100:.0f}% of {row['episodes']}"
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    table = [[title for title, _ in COLUMNS]] + [[cell(r, k) for _, k in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in table]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _or_nan(value: float | None) -> float:
    """A figure for the plot: a row without one (no success, no seam) leaves a gap, not a zero."""
    return float("nan") if value is None else value


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib (it is in the dev extra)") from None
    fig, (success, seams) = plt.subplots(1, 2, figsize=(11, 4))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        latencies = [r["latency_ms"] for r in mine]
        success.plot(latencies, [100 * r["success_rate"] for r in mine], marker="o", label=variant)
        seams.plot(latencies, [_or_nan(r["seam_jerk_median"]) for r in mine], marker="o", label=variant)
    success.set(xlabel="inference latency (ms)", ylabel="success over all tasks (%)", ylim=(-5, 105))
    seams.set(xlabel="inference latency (ms)", ylabel="jerk at chunk seams, median (rad/s^3)")
    success.legend(fontsize=8)
    for ax in (success, seams):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def with_bundle(spec: str, bundle: Path | None) -> str:
    """`spec` running `bundle` (unless it names its own), its row still labelled as before."""
    if bundle is None or "bundle=" in spec:
        return spec
    label = "" if "name=" in spec else f",name={spec or 'config'}"
    return f"{spec},bundle={bundle.resolve()}{label}"


def variant_config(config_path: Path, spec: str):
    from onboard.config import load_config
    from sim.eval import parse_variant

    return load_config(config_path, parse_variant(spec)[1])


def prefix_overhead(config, calls: int = OVERHEAD_CALLS) -> dict:
    """Median milliseconds of one inference (backbone + head) of `config`'s bundle engine on a synthetic observation,
    without a prefix and with one covering the first half of the chunk, alternating call by call on the same engine
    and inputs, and the prefix's overhead in percent of the whole inference and of the head alone."""
    from onboard.devices import build_engine
    from tools.bundle_samples import synthetic_samples

    engine = build_engine(config)
    if not hasattr(engine, "head"):
        raise UserError(
            f"the prefix overhead is timed on a bundle engine, not policy.engine '{config.policy.engine}'"
        )
    sample = synthetic_samples(engine.manifest.runtime, engine.bundle_dir, 1, 0)[0]
    _batch, _k, horizon, action_dim = engine.manifest.runtime.noise_shape
    prefix = np.random.default_rng(0).uniform(-1, 1, (horizon // 2, action_dim)).astype(np.float32)
    weight = config.policy.prefix_score_weight
    totals: dict[str, list[float]] = {"plain": [], "prefix": []}
    heads: dict[str, list[float]] = {"plain": [], "prefix": []}
    try:
        for _ in range(calls):
            for name, given in (("plain", None), ("prefix", prefix)):
                t0 = time.perf_counter_ns()
                bridge = engine.condition(sample.backbone_feed())
                t1 = time.perf_counter_ns()
                engine.head(bridge, sample.proprio, sample.noise, given, weight)
                t2 = time.perf_counter_ns()
                totals[name].append((t2 - t0) / 1e6)
                heads[name].append((t2 - t1) / 1e6)
    finally:
        engine.close()
    med = {f"{what}_{name}_ms": round(float(np.median(v)), 3)
           for what, d in (("infer", totals), ("head", heads)) for name, v in d.items()}  # fmt: skip
    return {
        "calls": calls,
        "prefix_steps": len(prefix),
        **med,
        "infer_overhead_pct": round(100 * (med["infer_prefix_ms"] / med["infer_plain_ms"] - 1), 1),
        "head_overhead_pct": round(100 * (med["head_prefix_ms"] / med["head_plain_ms"] - 1), 1),
    }


def _specs(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """The variant specs to run (each with --bundle) and a note on default RTC rows left out (or None). A spec with
    rtc=on builds its engine once first, so a bundle without prefix inputs is refused before any episode runs."""
    from onboard.devices import build_engine
    from policy_runtime.bundle import BundleError

    explicit = args.variant is not None
    specs = [with_bundle(s, args.bundle) for s in (args.variant or [*VARIANTS, *RTC_VARIANTS])]
    kept, note = [], None
    for spec in specs:
        config = variant_config(args.config, spec)  # every spec understood before the first episode runs
        if config.policy.prefix_conditioning:
            try:
                build_engine(config).close()
            except BundleError as exc:
                if explicit:
                    raise
                note = f"real-time chunking rows left out: {exc}"
                continue
        kept.append(spec)
    return kept, note


def main(args: argparse.Namespace) -> tuple[dict, bool]:
    from sim.eval import evaluate_variant
    from sim.tasks import task_names

    if args.episodes < 1 or any(ms < 0 for ms in args.latencies):
        raise UserError("--episodes must be >= 1 and every latency >= 0 ms")
    names = task_names(args.task)
    specs, note = _specs(args)
    overhead = None
    rtc = next((s for s in specs if variant_config(args.config, s).policy.prefix_conditioning), None)
    if rtc is not None:
        overhead = prefix_overhead(variant_config(args.config, rtc))
    rows = []
    for latency in args.latencies:
        for spec in specs:
            summary = evaluate_variant(args.config, spec, names, args.episodes, args.seed, latency)[-1]
            rows.append({"latency_ms": latency, **summary})
    print(format_table(rows))
    print(f"({len(names)} task(s) x {args.episodes} episodes per row, seeds {args.seed}..; lockstep eval)")
    if note is not None:
        print(f"({note})")
    if overhead is not None:
        o = overhead
        print(
            f"prefix conditioning, {o['calls']} inferences each: {o['infer_plain_ms']} ms without a prefix, "
            f"{o['infer_prefix_ms']} ms with a {o['prefix_steps']}-step prefix ({o['infer_overhead_pct']:+g}%); "
            f"head alone {o['head_plain_ms']} / {o['head_prefix_ms']} ms ({o['head_overhead_pct']:+g}%)"
        )
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return {"rows": rows, "prefix_overhead": overhead}, True
