"""A tiny random-weight checkpoint exported, INT8-quantized (dynamic) and verified once per test process;
tests that change a bundle work on a copy (`bundle_copy`)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

HELD_OUT_COUNT = 16
# The truncated schedule still starts at S_tr - 1 = 9; 5 denoising steps instead of 10 halve the head graph.
TEST_INFERENCE_STEPS = 5


@functools.lru_cache(maxsize=1)
def tiny_bundle() -> tuple[Path, Path]:
    """(checkpoint dir, bundle dir with verified fp32 and int8 variants). Shared: do not modify it."""
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
    from tools.demo_checkpoint import build_random_checkpoint
    from tools.export import export_policy
    from tools.quantize import quantize_bundle
    from tools.verify import verify_bundle

    root = Path(tempfile.mkdtemp(prefix="anchorvla-bundle-"))
    atexit.register(shutil.rmtree, root, True)
    checkpoint = build_random_checkpoint(
        root / "checkpoint", "demo", seed=0, inference_steps=TEST_INFERENCE_STEPS
    )
    from policy_runtime.bundle import checkpoint_sha256
    from policy_runtime.model.checkpoint import load_checkpoint

    policy, config = load_checkpoint(checkpoint)
    bundle = root / "bundle"
    export_policy(policy, config, bundle, str(checkpoint), checkpoint_sha256(checkpoint))
    manifest = quantize_bundle(bundle, "int8")
    samples = synthetic_samples(manifest.runtime, bundle, HELD_OUT_COUNT, HELD_OUT_SEED)
    verify_bundle(bundle, samples, checkpoint)
    return checkpoint, bundle


def bundle_copy(tmp_path: Path) -> Path:
    _checkpoint, bundle = tiny_bundle()
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


def write_demo_dataset(root: Path, seed: int, episodes: int = 2, frames: int = 6) -> Path:
    """A small recorded dataset (policy_runtime/dataset.py format) in the demo checkpoint's layouts."""
    import numpy as np

    from policy_runtime.dataset import EpisodeRecord, write_dataset
    from tools.demo_checkpoint import ACTION_HIGH, ACTION_LAYOUT, ACTION_LOW, CAMERAS, PROPRIO_LAYOUT

    rng = np.random.default_rng(seed)
    records = [
        EpisodeRecord(
            states=rng.normal(0, 0.5, (frames, len(PROPRIO_LAYOUT))),
            actions=rng.uniform(ACTION_LOW, ACTION_HIGH, (frames, len(ACTION_LAYOUT))),
            task=["pick up the red cup", "open the drawer"][e % 2],
            images={cam: rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8) for cam in CAMERAS},
        )
        for e in range(episodes)
    ]
    return write_dataset(root, records, 15.0, ACTION_LAYOUT, PROPRIO_LAYOUT)
