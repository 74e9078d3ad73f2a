"""The FP32 reference a bundle is verified against, and its stored copy inside the bundle.

`anchorvla verify` computes the reference with torch from the checkpoint, on held-out observations, and stores the
observations and the outputs in the bundle (`references.npz`, listed in the manifest with its sha256). Where torch
or the checkpoint is missing (the board, after `build-trt`), verify reads them back: numpy only, `np.load` with
`allow_pickle=False`, so a tampered file cannot run code, and its sha256 is checked before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import Manifest, ReferencesEntry, check_file, sha256_file
from tools.bundle_samples import Sample

REFERENCES_FILE = "references.npz"
_INPUTS = ("proprio", "noise", "images", "input_ids", "attention_mask", "proprio_delta")
_HEAD = ("chunk", "anchor_index", "scores", "context")


@dataclass
class Reference:
    """FP32 outputs per sample: bridge features, head (chunk, anchor index, scores, context), residual (planned
    action, correction) and, with AnchorRefine's gripper head, its logits."""

    bridge: list[np.ndarray] = field(default_factory=list)
    head: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    residual: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    gripper: list[np.ndarray] = field(default_factory=list)


def save_references(
    bundle: Path, manifest: Manifest, samples: list[Sample], ref: Reference, source: str
) -> ReferencesEntry:
    """Write the samples and the reference's outputs into the bundle; sets `manifest.references` (not written)."""
    arrays = {}
    for name in _INPUTS:
        values = [getattr(s, name) for s in samples]
        if values[0] is not None:
            arrays[f"input.{name}"] = np.stack(values)
    arrays["output.bridge"] = np.stack(ref.bridge)
    for k, name in enumerate(_HEAD):
        arrays[f"output.{name}"] = np.stack([h[k] for h in ref.head])
    arrays["output.planned"] = np.stack([r[0] for r in ref.residual])
    arrays["output.correction"] = np.stack([r[1] for r in ref.residual])
    if ref.gripper:
        arrays["output.gripper_logits"] = np.stack(ref.gripper)
    path = Path(bundle) / REFERENCES_FILE
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    manifest.references = ReferencesEntry(
        file=REFERENCES_FILE, sha256=sha256_file(path), samples=len(samples), source=source
    )
    return manifest.references


def load_references(bundle: Path, manifest: Manifest) -> tuple[list[Sample], Reference]:
    """The stored samples and reference, after checking the file against its sha256 in the manifest."""
    entry = manifest.references
    if entry is None:
        raise UserError(
            f"bundle {bundle} carries no reference outputs: run `anchorvla verify {bundle}` once where torch and "
            "the checkpoint are (the workstation), then copy the bundle again"
        )
    path = check_file(bundle, entry.file, entry.sha256)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (ValueError, OSError) as exc:
        raise UserError(
            f"{path} is not a readable references file ({exc}); verify with torch again"
        ) from None
    count = len(arrays["output.bridge"])
    if entry.samples != count or any(len(a) != count for a in arrays.values()):
        raise UserError(
            f"{path}: holds {count} samples, the manifest says {entry.samples}; verify with torch again"
        )
    samples = [
        Sample(**{name: arrays[f"input.{name}"][i] for name in _INPUTS if f"input.{name}" in arrays})
        for i in range(count)
    ]
    ref = Reference(
        bridge=list(arrays["output.bridge"]),
        head=[tuple(arrays[f"output.{name}"][i] for name in _HEAD) for i in range(count)],
        residual=list(zip(arrays["output.planned"], arrays["output.correction"], strict=True)),
        gripper=list(arrays.get("output.gripper_logits", [])),
    )
    return samples, ref
