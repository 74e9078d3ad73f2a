"""How much a checkpoint's actions come from its images: on recorded observations, the first action of the chunk it
plans against the recorded one, per instruction and action channel, with the images as recorded and blanked
(black frames). A channel whose correlation holds with the images blanked is driven by the proprio, not by what
the cameras see.

`python -m tools.image_reliance CHECKPOINT DATASET [--count N]` prints the table (policies/demo/README.md used it
on the colour tasks' held-out episodes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError


def image_reliance(checkpoint: Path, dataset: Path, count: int = 0, seed: int = 0) -> list[dict]:
    """One row per (instruction, action channel that varies there): correlation and mean absolute error of the
    first planned action with the recorded one (normalised units), with the images and with them blanked."""
    import torch

    from policy_runtime.dataset import load_dataset
    from policy_runtime.model.checkpoint import load_checkpoint
    from policy_runtime.model.tokenizer import build_tokenizer
    from tools.train import make_batch

    policy, config = load_checkpoint(Path(checkpoint))
    arch = config.architecture
    if arch.backbone is None:
        raise UserError(f"{checkpoint} has no backbone: its actions do not depend on images")
    policy.eval()
    data = load_dataset(Path(dataset), arch.head.horizon)
    indices = np.arange(len(data) if count <= 0 else min(count, len(data)))
    batch = make_batch(data, indices, arch, build_tokenizer(arch.backbone.tokenizer), "cpu")
    black = (0.0 - np.asarray(arch.image_mean)) / np.asarray(arch.image_std)
    blank = dict(batch, images=torch.ones_like(batch["images"]) * torch.tensor(black, dtype=torch.float32)[:, None, None])

    def first_actions(inputs: dict) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)  # the same noise with and without images
        shape = (len(indices), arch.head.num_anchors, arch.head.horizon, arch.head.action_dim)
        noise = torch.randn(shape, generator=generator)
        with torch.no_grad():
            chunk = policy(
                inputs["proprio"], noise, inputs["images"], inputs["input_ids"], inputs["attention_mask"],
                proprio_delta=inputs["proprio_delta"],
            )[0]  # fmt: skip
        return chunk[:, 0].numpy()

    recorded = batch["actions"][:, 0].numpy()
    seen, blind = first_actions(batch), first_actions(blank)
    tasks = np.array([data.tasks[i] for i in indices])
    rows = []
    for task in sorted(set(tasks)):
        rows_of = tasks == task
        for j, channel in enumerate(config.action_layout):
            target = recorded[rows_of, j]
            if target.std() < 1e-6:
                continue
            rows.append({
                "task": task, "channel": channel,
                "corr": _corr(target, seen[rows_of, j]), "corr_blank": _corr(target, blind[rows_of, j]),
                "mae": float(np.abs(target - seen[rows_of, j]).mean()),
                "mae_blank": float(np.abs(target - blind[rows_of, j]).mean()),
            })  # fmt: skip
    return rows


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if b.std() > 1e-9 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.image_reliance", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("dataset", type=Path, help="recorded observations (a LeRobotDataset), e.g. held-out episodes")
    parser.add_argument("--count", type=int, default=0, help="observations to use (0: all)")
    args = parser.parse_args(argv)
    try:
        rows = image_reliance(args.checkpoint, args.dataset, args.count)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'instruction':48s} {'channel':18s} {'corr':>6s} {'blank':>6s} {'mae':>6s} {'blank':>6s}")
    for r in rows:
        print(
            f"{r['task'][:48]:48s} {r['channel']:18s} {r['corr']:+6.2f} {r['corr_blank']:+6.2f} "
            f"{r['mae']:6.3f} {r['mae_blank']:6.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
