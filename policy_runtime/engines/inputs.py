"""Observation -> the arrays the exported graphs take, with numpy only (no torch): images resized and
normalised, the instruction tokenized, proprio assembled by its named layout and standardised, and chunks
mapped back from [-1, 1] to SI units.

This is the bundle engines' own minimal preprocessing; `policy_runtime/preprocess.py` (another branch) is the
shared one training uses, and the two are to be unified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from drivers.errors import UserError
from policy_runtime.bundle import RuntimeSpec
from policy_runtime.types import Observation

# Proprio channel names the runtime can fill from an Observation.
_BASE_FIELDS = {
    "base.x": lambda b: b.position[0],
    "base.y": lambda b: b.position[1],
    "base.z": lambda b: b.position[2],
    "base.yaw": lambda b: b.yaw,
    "base.vx": lambda b: b.velocity[0],
    "base.vy": lambda b: b.velocity[1],
    "base.vz": lambda b: b.velocity[2],
    "base.wz": lambda b: b.yaw_speed,
}


def _proprio_reader(name: str):
    """A function Observation -> float for one proprio channel name, or a UserError naming what is known."""
    if name in _BASE_FIELDS:
        field = _BASE_FIELDS[name]
        return lambda obs: 0.0 if obs.base is None else float(field(obs.base))
    parts = name.split(".")
    if parts[0] == "arm" and len(parts) in (2, 3):
        joint, kind = parts[1], (parts[2] if len(parts) == 3 else "pos")
        if kind in ("pos", "vel"):

            def read(obs: Observation) -> float:
                try:
                    i = obs.arm.joint_names.index(joint)
                except ValueError:
                    raise UserError(f"proprio channel {name}: the arm has no joint '{joint}'") from None
                return float((obs.arm.positions if kind == "pos" else obs.arm.velocities)[i])

            return read
    raise UserError(
        f"proprio channel '{name}' of the bundle is unknown to this runtime "
        f"(known: arm.<joint>[.pos|.vel], {', '.join(_BASE_FIELDS)})"
    )


def resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 -> size x size x 3 by nearest-neighbour sampling (no copy when it already fits)."""
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    rows = (np.arange(size) * h / size).astype(np.intp)
    cols = (np.arange(size) * w / size).astype(np.intp)
    return image[rows][:, cols]


class InputBuilder:
    """Turns Observations into the backbone/head/residual inputs of a bundle, and chunks back to SI units."""

    def __init__(self, spec: RuntimeSpec, bundle_dir: Path):
        self.spec = spec
        self._proprio = [_proprio_reader(n) for n in spec.proprio_layout]
        self.proprio_mean = np.asarray(spec.proprio_mean, dtype=np.float32)
        self.proprio_std = np.asarray(spec.proprio_std, dtype=np.float32)
        self.action_low = np.asarray(spec.action_low, dtype=np.float64)
        self.action_high = np.asarray(spec.action_high, dtype=np.float64)
        self._tokenize = make_tokenizer(spec, Path(bundle_dir)) if spec.tokenizer is not None else None
        self._token_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if spec.image is not None:
            self._mean = np.asarray(spec.image.mean, dtype=np.float32)[:, None, None]
            self._std = np.asarray(spec.image.std, dtype=np.float32)[:, None, None]

    def proprio(self, obs: Observation) -> np.ndarray:
        raw = np.array([read(obs) for read in self._proprio], dtype=np.float32)
        return ((raw - self.proprio_mean) / self.proprio_std)[None]

    def images(self, obs: Observation) -> np.ndarray:
        spec = self.spec.image
        assert spec is not None
        names = self.spec.cameras or list(obs.frames)
        missing = [n for n in names if n not in obs.frames]
        if missing:
            raise UserError(f"the policy needs camera(s) {missing}; configure robot.cameras with these names")
        out = np.empty((1, spec.num_images, 3, spec.size, spec.size), dtype=np.float32)
        for k, name in enumerate(names[: spec.num_images]):
            pixels = resize_nearest(obs.frames[name].image, spec.size).astype(np.float32) / 255.0
            out[0, k] = (pixels.transpose(2, 0, 1) - self._mean) / self._std
        return out

    def tokens(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        assert self._tokenize is not None
        if instruction not in self._token_cache:
            self._token_cache[instruction] = self._tokenize(instruction)
        return self._token_cache[instruction]

    def to_si(self, normalized: np.ndarray) -> np.ndarray:
        """Actions in [-1, 1] -> SI units per channel."""
        return self.action_low + (np.asarray(normalized, np.float64) + 1.0) * 0.5 * (
            self.action_high - self.action_low
        )

    def to_normalized(self, actions: np.ndarray) -> np.ndarray:
        return (
            2.0 * (np.asarray(actions, np.float64) - self.action_low) / (self.action_high - self.action_low)
            - 1.0
        )

    def correction_to_si(self, correction: np.ndarray) -> np.ndarray:
        """A correction in normalised units (a difference) -> SI units."""
        return np.asarray(correction, np.float64) * 0.5 * (self.action_high - self.action_low)


def make_tokenizer(spec: RuntimeSpec, bundle_dir: Path):
    tok = spec.tokenizer
    assert tok is not None
    if tok.kind == "bytes":
        from policy_runtime.model.tokenizer import ByteTokenizer  # numpy only

        byte_tokenizer = ByteTokenizer()
        return lambda text: byte_tokenizer.encode([text], tok.length)
    from tokenizers import Tokenizer  # light, no torch

    tokenizer = Tokenizer.from_file(str(bundle_dir / tok.file))
    tokenizer.enable_padding(length=tok.length, pad_id=tok.pad_id)
    tokenizer.enable_truncation(max_length=tok.length)

    def encode(text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer.encode(text)
        return np.asarray([enc.ids], np.int64), np.asarray([enc.attention_mask], np.int64)

    return encode
