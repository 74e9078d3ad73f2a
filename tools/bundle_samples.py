"""Observation samples for calibration and verification, as the arrays the graphs take.

From a recorded dataset (a LeRobotDataset, policy_runtime/dataset.py) when one is given; otherwise synthetic: drawn from the checkpoint's
layouts (proprio ~ N(0, 1) after standardisation, smooth random images, a few instructions) with a seed, so
calibration and the held-out verification set never share samples. Every caller says so in its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import RuntimeSpec
from policy_runtime.engines.inputs import InputBuilder, make_tokenizer
from policy_runtime.preprocess import resize_bilinear

INSTRUCTIONS = (
    "pick up the red cup",
    "open the drawer",
    "put the block in the bin",
    "walk to the table and grasp the bottle",
    "wave",
)
CALIBRATION_SEED = 0
HELD_OUT_SEED = 1_000_003


@dataclass(frozen=True)
class Sample:
    proprio: np.ndarray  # (1, P) standardised
    noise: np.ndarray  # head noise input
    images: np.ndarray | None = None  # (1, n, 3, S, S) normalised
    input_ids: np.ndarray | None = None
    attention_mask: np.ndarray | None = None
    proprio_delta: np.ndarray | None = None  # (1, P) normalised, for a backbone that reads it (Mamba)

    def backbone_feed(self) -> dict[str, np.ndarray]:
        if self.images is None:
            return {"proprio": self.proprio}
        feed = {"images": self.images, "input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.proprio_delta is not None:
            feed.update(proprio=self.proprio, proprio_delta=self.proprio_delta)
        return feed


def synthetic_samples(spec: RuntimeSpec, bundle_dir: Path, count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    tokenize = make_tokenizer(spec, Path(bundle_dir)) if spec.tokenizer is not None else None
    samples = []
    for i in range(count):
        proprio = rng.standard_normal((1, len(spec.proprio_layout))).astype(np.float32)
        noise = rng.standard_normal(spec.noise_shape).astype(np.float32)
        if spec.image is None:
            samples.append(Sample(proprio, noise))
            continue
        img = spec.image
        images = np.empty((1, img.images_per_observation, 3, img.size, img.size), np.float32)
        mean = np.asarray(img.mean, np.float32)[:, None, None]
        std = np.asarray(img.std, np.float32)[:, None, None]
        for k in range(img.images_per_observation):
            coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
            pixels = resize_bilinear(coarse, img.size, img.size) + rng.normal(0, 12, (img.size, img.size, 3))
            pixels = np.clip(pixels, 0, 255) / 255.0
            images[0, k] = (pixels.transpose(2, 0, 1) - mean) / std
        ids, mask = tokenize(INSTRUCTIONS[(i + seed) % len(INSTRUCTIONS)])
        delta = None
        if spec.proprio_delta_std is not None:
            delta = rng.standard_normal((1, len(spec.proprio_layout))).astype(np.float32)
        samples.append(Sample(proprio, noise, images, ids, mask, delta))
    return samples


def dataset_samples(spec: RuntimeSpec, bundle_dir: Path, data: Path, count: int, seed: int) -> list[Sample]:
    """`count` frames drawn (seeded) from a recorded dataset (policy_runtime/dataset.py format), preprocessed as
    the onboard engines do: proprio standardised with the bundle's statistics, images resized and normalised."""
    from policy_runtime.dataset import check_matches, load_dataset

    dataset = load_dataset(Path(data), horizon=1, with_images=spec.image is not None)
    cameras = spec.cameras or list(dataset.cameras)
    check_matches(
        dataset, "the bundle", proprio_layout=spec.proprio_layout, cameras=cameras if spec.image else None
    )
    builder = InputBuilder(spec, Path(bundle_dir), from_observations=False)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    samples = []
    for i in picks:
        proprio = builder.standardize_proprio(dataset.proprio[i])
        noise = rng.standard_normal(spec.noise_shape).astype(np.float32)
        if spec.image is None:
            samples.append(Sample(proprio, noise))
            continue
        ids, mask = builder.tokens(dataset.tasks[i])
        delta = None
        if spec.proprio_delta_std is not None:
            delta = builder.standardize_delta(dataset.proprio_delta[i])
        images = dataset.policy_images(np.array([i]), cameras, spec.image.anchor_image)[0]
        samples.append(Sample(proprio, noise, builder.images_from_arrays(images), ids, mask, delta))
    return samples


def observation_samples(
    spec: RuntimeSpec, bundle_dir: Path, data: Path | None, count: int, seed: int
) -> tuple[list[Sample], str]:
    """Samples and a line saying where they came from: the recorded dataset `data`, or synthetic ones."""
    if data is not None:
        if not Path(data).exists():
            raise UserError(
                f"--data {data} not found (a recorded dataset directory, see policy_runtime/dataset.py)"
            )
        samples = dataset_samples(spec, bundle_dir, data, count, seed)
        return samples, f"{len(samples)} recorded observations from {data} (seed {seed})"
    samples = synthetic_samples(spec, bundle_dir, count, seed)
    return (
        samples,
        f"{count} synthetic observations drawn from the checkpoint's layouts (seed {seed}); no recorded data",
    )
