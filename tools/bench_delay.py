"""`anchorvla bench delay`: closed-loop success, time and smoothness against inference latency, in one run.

For each latency (virtual time per inference, as `anchorvla eval --latency-ms`) and each variant (eval's variant
specs: how late chunks are served, the rolled-forward state, the residual, drift in the world), the tasks run at
the same seeds through `sim.eval.evaluate_variant`. The table has, per latency and variant, over all tasks: success,
median time to success, median RMS jerk of the arm commands, the median jerk at chunk seams beside the 95th
percentile of the jerk inside chunks (a seam no rougher than that is smooth), and underruns. `--plot` draws success
and seam jerk against latency (PNG, needs matplotlib).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anchorvla.errors import UserError

LATENCIES_MS = (60.0, 130.0, 200.0, 300.0, 400.0, 530.0)
VARIANTS = ("name=drop,late=drop", "name=shift,late=shift", "name=shift+residual,late=shift,residual=on",
            "name=shift+slip,late=shift,slip=0.02", "name=drop+slip,late=drop,slip=0.02")  # fmt: skip
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
                        help=f"eval variant specs (repeat); default: {' '.join(VARIANTS)}")  # fmt: skip
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


def main(args: argparse.Namespace) -> tuple[dict, bool]:
    from sim.eval import evaluate_variant, parse_variant
    from sim.tasks import task_names

    if args.episodes < 1 or any(ms < 0 for ms in args.latencies):
        raise UserError("--episodes must be >= 1 and every latency >= 0 ms")
    names = task_names(args.task)
    specs = args.variant or list(VARIANTS)
    for spec in specs:
        parse_variant(spec)  # every spec understood before the first episode runs
    rows = []
    for latency in args.latencies:
        for spec in specs:
            summary = evaluate_variant(args.config, spec, names, args.episodes, args.seed, latency)[-1]
            rows.append({"latency_ms": latency, **summary})
    print(format_table(rows))
    print(f"({len(names)} task(s) x {args.episodes} episodes per row, seeds {args.seed}..; lockstep eval)")
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return {"rows": rows}, True
