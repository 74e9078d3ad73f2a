"""Observation -> the arrays the exported graphs take, with numpy only (no torch): images resized (bilinear, as
training's `policy_runtime/model/inputs.py` does) and normalised, the instruction tokenized, proprio assembled by its named layout and standardised, and chunks
mapped back from [-1, 1] to SI units.

This is the bundle engines' own minimal preprocessing, kept free of torch; `policy_runtime/model/inputs.py` (torch,
training) and `policy_runtime/preprocess.py` (numpy, another branch) do the same: the three are to be unified.
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

        def read_base(obs: Observation) -> float:
            if obs.base is None:
                raise UserError(
                    f"the policy's proprio layout needs {name} but the robot has no base configured"
                )
            return float(field(obs.base))

        return read_base
    parts = name.split(".")
    if parts[0] == "arm" and len(parts) == 3:
        joint, kind = parts[1], parts[2]
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
        f"(known: arm.<joint>.pos, arm.<joint>.vel, {', '.join(_BASE_FIELDS)})"
    )


def _bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel-centre bilinear resize (torch's align_corners=False)."""
    src = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.intp), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """HxWxC -> size x size x C float32, as torch.nn.functional.interpolate(bilinear, align_corners=False) does
    in training (policy_runtime/model/inputs.py); no copy beyond the cast when it already fits."""
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    if (h, w) == (size, size):
        return pixels
    r0, r1, wr = _bilinear_taps(h, size)
    c0, c1, wc = _bilinear_taps(w, size)
    rows = pixels[r0] * (1 - wr)[:, None, None] + pixels[r1] * wr[:, None, None]
    return rows[:, c0] * (1 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]


class InputBuilder:
    """Turns Observations into the backbone/head/residual inputs of a bundle, and chunks back to SI units."""

    def __init__(self, spec: RuntimeSpec, bundle_dir: Path, from_observations: bool = True):
        """`from_observations`: check now that every proprio channel can be read from the robot (the engines);
        offline tools that feed recorded vectors pass False."""
        self.spec = spec
        self._proprio = [_proprio_reader(n) for n in spec.proprio_layout] if from_observations else []
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
        return self.standardize_proprio(np.array([read(obs) for read in self._proprio], dtype=np.float32))

    def standardize_proprio(self, raw: np.ndarray) -> np.ndarray:
        """A proprio vector in SI units (the bundle's layout) -> (1, P) float32 as the graphs take it."""
        return ((np.asarray(raw, np.float32) - self.proprio_mean) / self.proprio_std)[None]

    def images(self, obs: Observation) -> np.ndarray:
        names = self.spec.cameras or list(obs.frames)
        missing = [n for n in names if n not in obs.frames]
        if missing:
            raise UserError(f"the policy needs camera(s) {missing}; configure robot.cameras with these names")
        return self.images_from_arrays([obs.frames[name].image for name in names])

    def images_from_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB images in the bundle's camera order -> (1, n, 3, S, S) float32, normalised."""
        spec = self.spec.image
        assert spec is not None
        out = np.empty((1, spec.num_images, 3, spec.size, spec.size), dtype=np.float32)
        for k, image in enumerate(images[: spec.num_images]):
            pixels = resize_bilinear(image, spec.size) / 255.0
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
