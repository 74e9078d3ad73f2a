"""One tiny random-weight checkpoint with both of issue 11's options (anchor image, gripper head), exported and
verified (fp32) once per test process; shared by tests/policy_runtime/test_anchor_image.py and test_gripper_refine.py."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def options_bundle() -> tuple[Path, Path]:
    """(checkpoint dir, bundle dir). Shared: do not modify it."""
    from policy_runtime.bundle import checkpoint_sha256
    from policy_runtime.model.checkpoint import load_checkpoint
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
    from tools.demo_checkpoint import build_random_checkpoint
    from tools.export import export_policy
    from tools.verify import verify_bundle

    root = Path(tempfile.mkdtemp(prefix="anchorvla-options-"))
    atexit.register(shutil.rmtree, root, True)
    checkpoint = build_random_checkpoint(
        root / "checkpoint", seed=4, inference_steps=3, anchor_image=True, gripper_head=True
    )
    policy, config = load_checkpoint(checkpoint)
    bundle = root / "bundle"
    manifest = export_policy(policy, config, bundle, str(checkpoint), checkpoint_sha256(checkpoint))
    verify_bundle(bundle, synthetic_samples(manifest.runtime, bundle, 4, HELD_OUT_SEED), checkpoint)
    return checkpoint, bundle
