"""The policy's inputs from raw observations, in one place for training and inference (numpy only: the onboard
process runs without torch).

Images: centre crop to the policy's aspect ratio, bilinear resize to its size (the same numbers as torch's
`interpolate(mode="bilinear", align_corners=False)`), scale to [0, 1], normalise with the given per-channel
mean/std, HxWx3 uint8 -> float32 3xHxW; `preprocess_frames` stacks an observation's cameras in a given order (and, for a
policy that keeps an anchor image, each camera's first frame of the episode after them: `policy_images`).

Proprio: a float32 vector with a named layout. Channel names:

    base.x base.y base.z base.yaw          odometry pose (m, rad)
    base.vx base.vy base.vz base.wz        body-frame velocity (m/s, rad/s)
    arm.<joint>                            joint position (rad), e.g. arm.shoulder_pan
    arm.<joint>.vel                        joint velocity (rad/s)
    ee.x ee.y ee.z                         gripper frame position in the arm base frame (m), SO-101 kinematics
    goal.x goal.y goal.z                   target object/goal position in the arm base frame (m), `Observation.goal`

A base channel without a base state is NaN, so the engine's non-finite check refuses the observation rather
than the policy seeing a made-up zero.

State delta (AnoleVLA's second token): the proprio vector minus the one of the previous control tick, zero at the
first tick of an episode and on goal.* channels (an observation carries one goal, not the previous tick's)
(`state_delta`); the dataset (training) and the engines (inference) both call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from anchorvla.errors import UserError
from drivers.robot_model import forward
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def center_crop(image: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred window of `image` with width/height == `aspect`."""
    h, w = image.shape[:2]
    if w > aspect * h:
        cw = max(1, round(aspect * h))
        x0 = (w - cw) // 2
        return image[:, x0 : x0 + cw]
    ch = max(1, round(w / aspect))
    y0 = (h - ch) // 2
    return image[y0 : y0 + ch]


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWxC -> height x width x C float32, bilinear with pixel centres aligned (as cv2/PIL's default)."""
    h, w = image.shape[:2]
    src = image.astype(np.float32)
    if (h, w) == (height, width):
        return src

    def axis(n_out: int, n_in: int):
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(height, h)
    x0, x1, fx = axis(width, w)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def preprocess_image(
    image: np.ndarray,
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop: bool = True,
) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 3 x size[0] x size[1], (x/255 - mean)/std. `crop`: centre crop to the aspect first."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    height, width = size
    if crop:
        image = center_crop(image, width / height)
    out = resize_bilinear(image, height, width) / np.float32(255.0)
    out -= np.asarray(mean, dtype=np.float32)
    out /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def preprocess_frames(
    frames: Mapping[str, Frame],
    cameras: Sequence[str],
    size: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop: bool = True,
    anchor_frames: Mapping[str, Frame] | None = None,
) -> np.ndarray:
    """The policy's image input: float32 (n, 3, H, W), cameras in the order the policy was trained with; with
    `anchor_frames` (a policy that keeps an anchor image) each camera's first frame of the episode follows."""
    images = policy_images(
        {n: f.image for n, f in frames.items()},
        {n: f.image for n, f in (anchor_frames or {}).items()},
        cameras,
        anchor_frames is not None,
    )
    return np.stack([preprocess_image(im, size, mean, std, crop) for im in images])


def policy_images(
    current: Mapping[str, np.ndarray],
    anchors: Mapping[str, np.ndarray],
    cameras: Sequence[str],
    anchor_image: bool,
) -> list[np.ndarray]:
    """The raw HxWx3 images a policy reads, in its order: each camera's current image, then, for a policy that
    keeps an anchor image (AnchorVLA4D), each camera's first image of the episode. Training (the dataset's frame and
    its episode's frame 0) and inference (`Observation.frames` / `anchor_frames`) both order them here."""
    missing = [c for c in cameras if c not in current]
    if missing:
        raise UserError(
            f"the policy needs camera(s) {', '.join(missing)}; the robot has {', '.join(current) or 'none'} "
            "(name robot.cameras[] as in the checkpoint)"
        )
    images = [current[c] for c in cameras]
    if anchor_image:
        missing = [c for c in cameras if c not in anchors]
        if missing:
            raise UserError(
                f"the policy keeps an anchor image but the observation has no first frame of the episode for "
                f"camera(s) {', '.join(missing)} (the slow loop keeps them: Observation.anchor_frames)"
            )
        images += [anchors[c] for c in cameras]
    return images


@dataclass(frozen=True)
class ProprioLayout:
    """A checked list of proprio channel names; `vector(arm, base, goal)` builds the float32 vector in that order."""

    channels: tuple[str, ...]
    joint_names: tuple[str, ...] = SO101_JOINTS

    def __post_init__(self):
        bad = [c for c in self.channels if not self._known(c)]
        if bad:
            raise UserError(
                f"proprio layout: unknown channel(s) {', '.join(bad)} (accepted: base.x/y/z/yaw, base.vx/vy/vz/wz, "
                f"arm.<joint>, arm.<joint>.vel, ee.x/y/z, goal.x/y/z; joints: {', '.join(self.joint_names)})"
            )

    def _known(self, channel: str) -> bool:
        if channel in _BASE or channel in _EE or channel in _GOAL:
            return True
        parts = channel.split(".")
        return (
            parts[0] == "arm"
            and len(parts) in (2, 3)
            and parts[1] in self.joint_names
            and parts[2:] in ([], ["vel"])
        )

    def vector(self, arm: ArmState, base: BaseState | None, goal: np.ndarray | None = None) -> np.ndarray:
        index = {name: i for i, name in enumerate(arm.joint_names)}
        ee = None
        out = np.empty(len(self.channels), dtype=np.float32)
        for k, channel in enumerate(self.channels):
            if channel in _BASE:
                out[k] = np.nan if base is None else _BASE[channel](base)
            elif channel in _GOAL:
                out[k] = np.nan if goal is None else goal[_GOAL[channel]]
            elif channel in _EE:
                if ee is None:
                    ee = forward([arm.positions[index[j]] for j in SO101_JOINTS[:5]]).gripper[:3, 3]
                out[k] = ee[_EE[channel]]
            else:
                parts = channel.split(".")
                values = arm.velocities if len(parts) == 3 else arm.positions
                out[k] = values[index[parts[1]]]
        return out

    def delta(
        self,
        arm: ArmState,
        base: BaseState | None,
        previous_arm: ArmState | None,
        previous_base: BaseState | None,
        goal: np.ndarray | None = None,
    ) -> np.ndarray:
        """The state delta between this tick and the previous one (`state_delta`), SI units; zeros without a
        previous tick or when it has a non-finite channel (e.g. the base had not reported yet)."""
        previous = None
        if previous_arm is not None:
            previous = self.vector(previous_arm, previous_base, goal)
            if not np.all(np.isfinite(previous)):
                previous = None
        return state_delta(self.vector(arm, base, goal), previous, self.channels)


def state_delta(current: np.ndarray, previous: np.ndarray | None, channels: Sequence[str]) -> np.ndarray:
    """Proprio (..., P) minus the previous tick's (same layout, SI units); zeros without a previous tick and on
    the goal.* channels."""
    current = np.asarray(current)
    if previous is None:
        return np.zeros_like(current)
    delta = current - np.asarray(previous, dtype=current.dtype)
    delta[..., [k for k, name in enumerate(channels) if name in _GOAL]] = 0
    return delta


_BASE = {
    "base.x": lambda b: b.position[0],
    "base.y": lambda b: b.position[1],
    "base.z": lambda b: b.position[2],
    "base.yaw": lambda b: b.yaw,
    "base.vx": lambda b: b.velocity[0],
    "base.vy": lambda b: b.velocity[1],
    "base.vz": lambda b: b.velocity[2],
    "base.wz": lambda b: b.yaw_speed,
}
_EE = {"ee.x": 0, "ee.y": 1, "ee.z": 2}
_GOAL = {"goal.x": 0, "goal.y": 1, "goal.z": 2}
