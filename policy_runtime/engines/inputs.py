"""Observation -> the arrays the exported graphs take, with numpy only (no torch), through the preprocessing that
training and the torch engine share (`policy_runtime/preprocess.py`): images centre-cropped, resized and
normalised, proprio by its named layout and standardised, the state delta (for a backbone that reads it) from the
observation's previous tick, the instruction tokenized; and chunks mapped back from
[-1, 1] to SI units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import RuntimeSpec
from policy_runtime.preprocess import ProprioLayout, policy_images, preprocess_image
from policy_runtime.types import Observation


class InputBuilder:
    """Turns Observations into the backbone/head/residual inputs of a bundle, and chunks back to SI units."""

    def __init__(self, spec: RuntimeSpec, bundle_dir: Path, from_observations: bool = True):
        """`from_observations`: check now that every proprio channel can be read from the robot (the engines);
        offline tools that feed recorded vectors pass False."""
        self.spec = spec
        self._layout = ProprioLayout(tuple(spec.proprio_layout)) if from_observations else None
        self.proprio_mean = np.asarray(spec.proprio_mean, dtype=np.float32)
        self.proprio_std = np.asarray(spec.proprio_std, dtype=np.float32)
        self.delta_std = (
            None if spec.proprio_delta_std is None else np.asarray(spec.proprio_delta_std, dtype=np.float32)
        )
        self.action_low = np.asarray(spec.action_low, dtype=np.float64)
        self.action_high = np.asarray(spec.action_high, dtype=np.float64)
        self._tokenize = make_tokenizer(spec, Path(bundle_dir)) if spec.tokenizer is not None else None
        self._token_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def proprio(self, obs: Observation) -> np.ndarray:
        assert self._layout is not None
        raw = self._layout.vector(obs.arm, obs.base, obs.goal)
        if not np.all(np.isfinite(raw)):
            bad = [n for n, v in zip(self.spec.proprio_layout, raw, strict=True) if not np.isfinite(v)]
            raise UserError(
                f"proprio channel(s) {', '.join(bad)} have no finite value (is the base configured?)"
            )
        return self.standardize_proprio(raw)

    def standardize_proprio(self, raw: np.ndarray) -> np.ndarray:
        """A proprio vector in SI units (the bundle's layout) -> (1, P) float32 as the graphs take it."""
        return ((np.asarray(raw, np.float32) - self.proprio_mean) / self.proprio_std)[None]

    def proprio_delta(self, obs: Observation) -> np.ndarray:
        """The state delta of `obs` (its proprio minus its previous tick's), (1, P) float32 as the graphs take it."""
        assert self._layout is not None
        delta = self._layout.delta(obs.arm, obs.base, obs.previous_arm, obs.previous_base, obs.goal)
        return self.standardize_delta(delta)

    def standardize_delta(self, delta: np.ndarray) -> np.ndarray:
        """A state delta in SI units -> (1, P) float32, divided by the bundle's delta std."""
        assert self.delta_std is not None
        return (np.asarray(delta, np.float32) / self.delta_std)[None]

    def images(self, obs: Observation) -> np.ndarray:
        """The observation's images (current cameras, then their anchors when the policy keeps them)."""
        spec = self.spec.image
        assert spec is not None
        names = self.spec.cameras or list(obs.frames)[: spec.num_images]
        return self.images_from_arrays(
            policy_images(
                {n: f.image for n, f in obs.frames.items()},
                {n: f.image for n, f in obs.anchor_frames.items()},
                names,
                spec.anchor_image,
            )
        )

    def images_from_arrays(self, images: list[np.ndarray]) -> np.ndarray:
        """HxWx3 uint8 RGB images in the policy's order (`policy_images`) -> (1, n, 3, S, S) float32, normalised."""
        spec = self.spec.image
        assert spec is not None
        size = (spec.size, spec.size)
        return np.stack([preprocess_image(im, size, spec.mean, spec.std) for im in images])[None]

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
    """The bundle's instruction tokenizer as `text -> (ids, mask)`, each (1, length): numpy and `tokenizers` only,
    the same class training and the torch engine tokenize with."""
    from policy_runtime.model.tokenizer import ByteTokenizer, LocalTokenizer  # numpy and tokenizers only

    tok = spec.tokenizer
    assert tok is not None
    tokenizer = ByteTokenizer() if tok.kind == "bytes" else LocalTokenizer(bundle_dir / tok.file, tok.pad_id)
    return lambda text: tokenizer.encode([text], tok.length)
