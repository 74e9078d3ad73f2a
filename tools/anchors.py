"""`anchorvla anchors`: the anchor vocabulary. K-means (scikit-learn) over normalised expert chunks -> M anchors,
with a report of cluster sizes and coverage (mean per-element L1 from a chunk to its nearest anchor).

Writes `anchors.safetensors` (anchors (M, H, d) in normalised units, action_low/high) and `anchors.json` (the
report and layouts) to --out; `anchorvla train --anchors DIR` stores them in the checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from tools import dataset_args


def fit_anchors(chunks: np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, list[int], float]:
    """chunks (N, H, d) normalised -> anchors (M, H, d), cluster sizes, coverage L1."""
    from sklearn.cluster import KMeans

    n = chunks.shape[0]
    if n < count:
        raise UserError(f"{n} chunks cannot make {count} anchors; record more data or lower --num-anchors")
    flat = chunks.reshape(n, -1)
    km = KMeans(n_clusters=count, n_init=4, random_state=seed).fit(flat)
    anchors = km.cluster_centers_.reshape(count, *chunks.shape[1:]).astype(np.float32)
    sizes = np.bincount(km.labels_, minlength=count).tolist()
    nearest = np.abs(flat[:, None, :] - anchors.reshape(count, -1)[None]).sum(-1).argmin(1)
    coverage = float(np.abs(flat - anchors.reshape(count, -1)[nearest]).mean())
    return anchors, sizes, coverage


def format_report(sizes: list[int], coverage: float) -> str:
    total = sum(sizes)
    lines = [
        f"{len(sizes)} anchors over {total} chunks; coverage (mean L1 to nearest anchor, normalised): {coverage:.4f}"
    ]
    lines.append("anchor  chunks  share")
    for m, size in enumerate(sizes):
        lines.append(f"{m:>6}  {size:>6}  {size / total:6.1%}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, type=Path, help="LeRobotDataset directory (see policy_runtime/dataset.py)"
    )
    dataset_args.add_arguments(parser)
    parser.add_argument(
        "--out", required=True, type=Path, help="directory for anchors.safetensors + anchors.json"
    )
    parser.add_argument("--num-anchors", type=int, default=20, help="M (default 20)")
    parser.add_argument("--horizon", type=int, default=8, help="H, actions per chunk (default 8)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from safetensors.numpy import save_file

    if args.num_anchors < 1 or args.horizon < 1:
        raise UserError("--num-anchors and --horizon must be >= 1")
    data = dataset_args.load(args, args.horizon, with_images=False)
    anchors, sizes, coverage = fit_anchors(data.normalized_chunks(), args.num_anchors, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"anchors": anchors, "action_low": data.action_low, "action_high": data.action_high},
        str(args.out / "anchors.safetensors"),
    )
    meta = {
        "count": args.num_anchors,
        "horizon": args.horizon,
        "cluster_sizes": sizes,
        "coverage_l1": coverage,
        "source": str(args.dataset),
        "action_layout": list(data.action_layout),
    }
    (args.out / "anchors.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(format_report(sizes, coverage))
    print(f"wrote {args.out / 'anchors.safetensors'}")
    return 0
