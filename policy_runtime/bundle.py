"""The deployment bundle: a directory with `manifest.json` beside the `.onnx` / `.engine` files.

The manifest holds the format version, the source checkpoint's hash, one entry per graph file (role, precision,
sha256, inputs/outputs, external data files with their sha256, and the figures the export check and `verify`
measured), one entry per variant (the set of graphs a precision runs, with its end-to-end verification and
gates), and what the runtime needs to run the policy without torch: layouts, normalization, image
preprocessing constants and the tokenizer.

Loading (`open_bundle`) checks every file a variant uses against its sha256 before any engine reads it, and
refuses a variant whose gates failed or were never run unless forced. Every file name in a manifest must lead to
a file inside the bundle directory (`read_manifest` refuses `../x`, absolute paths and symlinks that lead out
before anything is read). numpy/pydantic only: no torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from anchorvla.errors import UserError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
ROLES = ("backbone", "head", "residual")
Precision = Literal["fp32", "fp16", "int8", "int4"]
# Metadata key every exported ONNX graph carries: the sha256 of the checkpoint it was made from.
CHECKPOINT_KEY = "anchorvla.checkpoint_sha256"

# The accuracy gates (FACTS.md): backbone cosine by precision, chunk cosine, anchor-selection agreement.
BACKBONE_COS_GATE = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.99, "int4": 0.99}
CHUNK_COS_GATE = 0.99
ANCHOR_AGREEMENT_GATE = 0.98
# A variant's anchor choice agrees with the reference's when the reference scores it within this many logits of
# its own best (a probability ratio under 1.22): between candidates the reference itself cannot tell apart (the
# two sides of an obstacle at the start of a reach), a flip is not a fidelity error. Strict agreement is reported
# beside it.
ANCHOR_TIE_LOGITS = 0.2
# Ours (FACTS.md has none for it): the share of chunk steps whose gripper open/close sign a variant keeps, as
# strict as the anchor agreement, since a flipped decision opens or closes the gripper.
GRIPPER_AGREEMENT_GATE = 0.98


class BundleError(UserError):
    """A bundle that must not run: tampered, incomplete, from another checkpoint, or failed its gates."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorSpec(_Model):
    name: str
    shape: list[int | str]
    dtype: str


class FileRef(_Model):
    file: str
    sha256: str


class GraphEntry(_Model):
    """One graph file. `verification` holds figures measured against the FP32 torch reference."""

    role: Literal["backbone", "head", "residual"]
    precision: Precision
    format: Literal["onnx", "tensorrt"] = "onnx"
    file: str
    sha256: str
    external_data: list[FileRef] = Field(default_factory=list)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    method: str = Field(default="export", description="how it was made: export, fp16, int8-static-qdq, ...")
    verification: dict[str, float | int | bool | str] = Field(default_factory=dict)

    def feed(self, arrays: dict) -> dict:
        """The entries of `arrays` this graph takes (an export drops the inputs a graph does not use)."""
        names = {t.name for t in self.inputs}
        return {k: v for k, v in arrays.items() if k in names}


class VariantEntry(_Model):
    """A runnable set of graphs (one per role) under one precision name, and its end-to-end verification."""

    format: Literal["onnx", "tensorrt"] = "onnx"
    graphs: dict[str, str] = Field(description="role -> file (a key of Manifest.graphs)")
    status: Literal["unverified", "passed", "failed"] = "unverified"
    gates: dict[str, float] = Field(default_factory=dict)
    verification: dict[str, float | int | bool | str | list[float]] = Field(default_factory=dict)


class ImageSpec(_Model):
    size: int
    mean: list[float]
    std: list[float]
    num_images: int = Field(description="cameras")
    anchor_image: bool = Field(
        default=False, description="each camera's first frame of the episode follows the current images"
    )

    @property
    def images_per_observation(self) -> int:
        return self.num_images * (2 if self.anchor_image else 1)


class TokenizerSpec(_Model):
    kind: Literal["bytes", "tokenizers"]
    length: int
    file: str | None = Field(default=None, description="tokenizer.json inside the bundle (kind 'tokenizers')")
    pad_id: int = 0


class GripperSpec(_Model):
    """AnchorRefine's gripper head: the head graph's extra output `gripper_logits` (1, H) decides action column
    `channel` with hysteresis of half-width `margin`, to `closed_value` or `open_value` (SI units; None: while open
    the plan's own value runs)."""

    channel: int
    margin: float
    closed_value: float
    open_value: float | None


class RuntimeSpec(_Model):
    """Everything the onboard process needs besides the graphs."""

    action_layout: list[str]
    proprio_layout: list[str]
    cameras: list[str]
    dt_s: float
    action_low: list[float]
    action_high: list[float]
    proprio_mean: list[float]
    proprio_std: list[float]
    proprio_delta_std: list[float] | None = Field(
        default=None, description="set when the backbone also takes proprio and the state delta (Mamba)"
    )
    image: ImageSpec | None
    tokenizer: TokenizerSpec | None
    noise_shape: list[int]
    mode: str
    gripper: GripperSpec | None = None
    prefix_conditioning: bool = Field(
        default=False,
        description="the head graph takes a real-time chunking prefix (prefix, prefix_length, prefix_score_weight); "
        "bundles exported before it existed do not",
    )

    def prefix_feed(self, prefix=None, score_weight: float = 0.0) -> dict:
        """The head graph's prefix inputs: `prefix` (p, d) normalised actions in a (1, H, d) array with its length
        and score weight; without one, length 0 (the chunk of a graph without the inputs). Empty for a bundle whose
        head has no prefix inputs."""
        if not self.prefix_conditioning:
            return {}
        full = np.zeros((1, *self.noise_shape[2:]), np.float32)
        length = 0 if prefix is None else len(prefix)
        if prefix is not None:
            full[0, :length] = prefix
        return {
            "prefix": full,
            "prefix_length": np.array([length], np.int64),
            "prefix_score_weight": np.array([score_weight], np.float32),
        }


class SourceCheckpoint(_Model):
    path: str
    sha256: str


class ReferencesEntry(_Model):
    """Held-out observations and the FP32 torch outputs on them (`anchorvla verify` with torch stores them), so
    `verify` can check the variants where neither torch nor the checkpoint is (the board). A numpy .npz, read
    without pickle."""

    file: str
    sha256: str
    samples: int
    source: str = Field(description="where the observations came from (synthetic with a seed, or a dataset)")


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    source_checkpoint: SourceCheckpoint
    runtime: RuntimeSpec
    graphs: dict[str, GraphEntry] = Field(default_factory=dict, description="file name -> entry")
    variants: dict[str, VariantEntry] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="other files (tokenizer) -> sha256")
    references: ReferencesEntry | None = None

    def write(self, directory: Path) -> None:
        text = json.dumps(self.model_dump(mode="json"), indent=2) + "\n"
        tmp = Path(directory) / (MANIFEST_FILE + ".tmp")
        tmp.write_text(text)
        tmp.replace(Path(directory) / MANIFEST_FILE)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(directory: Path) -> str:
    """One hash over a checkpoint directory's files (name and content, sorted by name)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "residual.safetensors"):
        path = directory / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def bundle_path(directory: Path, name: str) -> Path:
    """`directory / name`, refused unless it stays inside the bundle: a plain relative name (no `..`, not
    absolute) whose target, symlinks followed, lies inside the directory."""
    directory = Path(directory)
    pure = PurePosixPath(name)
    plain = (
        bool(name)
        and "\0" not in name
        and "\\" not in name
        and not pure.is_absolute()
        and ".." not in pure.parts
    )
    if plain:
        inside = directory.resolve()
        target = (directory / name).resolve()
        if target != inside and target.is_relative_to(inside):
            return directory / name
    raise BundleError(
        f"{directory / MANIFEST_FILE} names {name!r}, which leads outside the bundle directory: a bundle reads "
        "only its own files (re-export it, or get it from who made it)"
    )


def _manifest_names(manifest: Manifest) -> list[str]:
    """Every file name the manifest holds (graphs, their external data, variants, other files, tokenizer,
    references)."""
    names = [*manifest.graphs, *manifest.files]
    for entry in manifest.graphs.values():
        names += [entry.file, *(ref.file for ref in entry.external_data)]
    for variant in manifest.variants.values():
        names += variant.graphs.values()
    if manifest.runtime.tokenizer is not None and manifest.runtime.tokenizer.file is not None:
        names.append(manifest.runtime.tokenizer.file)
    if manifest.references is not None:
        names.append(manifest.references.file)
    return names


def read_manifest(directory: Path) -> Manifest:
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise BundleError(f"bundle directory {directory} not found (make one with `anchorvla export`)")
    if not path.is_file():
        raise BundleError(f"{path} not found: {directory} is not a bundle (make one with `anchorvla export`)")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise BundleError(
            f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}; re-export the bundle"
        ) from None
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.format_version}, this build reads {FORMAT_VERSION}; re-export"
        )
    for name in _manifest_names(manifest):
        bundle_path(directory, name)
    return manifest


def check_file(directory: Path, name: str, expected_sha256: str) -> Path:
    path = bundle_path(directory, name)
    if not path.is_file():
        raise BundleError(f"bundle file {path} is missing (listed in {MANIFEST_FILE}); re-export the bundle")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise BundleError(
            f"bundle file {path} does not match its sha256 in {MANIFEST_FILE} (tampered or corrupted); re-export"
        )
    return path


def check_graph(directory: Path, entry: GraphEntry) -> Path:
    for ref in entry.external_data:
        check_file(directory, ref.file, ref.sha256)
    return check_file(directory, entry.file, entry.sha256)


def choose_variant(manifest: Manifest, precision: str, engine_format: str) -> str:
    """The variant name to run: `precision`, or with 'auto' the fastest one present that passed its gates."""
    names = [n for n, v in manifest.variants.items() if v.format == engine_format]
    if not names:
        raise BundleError(
            f"the bundle has no {engine_format} variant (available: {', '.join(manifest.variants) or 'none'})"
        )
    if precision != "auto":
        name = precision if engine_format == "onnx" else f"trt-{precision}"
        if name not in manifest.variants:
            raise BundleError(
                f"the bundle has no '{name}' variant (available: {', '.join(names)}); "
                f"make it with `anchorvla quantize`/`build-trt` or set policy.precision"
            )
        return name
    preference = ["int8", "int4", "fp16", "fp32"]
    key = {n: preference.index(n.removeprefix("trt-")) for n in names if n.removeprefix("trt-") in preference}
    passed = [n for n in key if manifest.variants[n].status == "passed"]
    return min(passed or key, key=key.__getitem__)


def open_bundle(
    directory: Path,
    precision: str = "auto",
    engine_format: str = "onnx",
    force_unverified: bool = False,
    expected_checkpoint_sha256: str | None = None,
) -> tuple[Manifest, str, dict[str, Path]]:
    """Read the manifest, pick the variant, check its files' sha256 and its gates.

    Returns (manifest, variant name, role -> checked graph path). Raises BundleError with one line otherwise.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if expected_checkpoint_sha256 and manifest.source_checkpoint.sha256 != expected_checkpoint_sha256:
        raise BundleError(
            f"bundle {directory} was made from another checkpoint ({manifest.source_checkpoint.path}, "
            f"sha256 {manifest.source_checkpoint.sha256[:12]}, expected {expected_checkpoint_sha256[:12]}); "
            f"export it from the right checkpoint"
        )
    name = choose_variant(manifest, precision, engine_format)
    variant = manifest.variants[name]
    if variant.status != "passed" and not force_unverified:
        what = "failed its accuracy gates" if variant.status == "failed" else "has not been verified"
        raise BundleError(
            f"bundle {directory} variant '{name}' {what}: run `anchorvla verify {directory}` "
            f"or set policy.force_unverified: true to run it anyway"
        )
    paths: dict[str, Path] = {}
    for role in ROLES:
        file = variant.graphs.get(role)
        if file is None:
            continue
        entry = manifest.graphs.get(file)
        if entry is None:
            raise BundleError(
                f"{directory / MANIFEST_FILE}: variant '{name}' names {file}, which has no entry"
            )
        paths[role] = check_graph(directory, entry)
    for file, digest in manifest.files.items():
        check_file(directory, file, digest)
    return manifest, name, paths
