"""Image and proprio preprocessing shared by training and inference."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers.robot_model import forward
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame
from policy_runtime.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ProprioLayout,
    center_crop,
    preprocess_frames,
    preprocess_image,
)


def test_constant_image_normalises_per_channel():
    image = np.empty((48, 64, 3), np.uint8)
    image[...] = (255, 128, 0)
    out = preprocess_image(image, (32, 32))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    expected = (np.array([255, 128, 0]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), expected, rtol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0, atol=1e-5)


def test_center_crop_keeps_the_middle_at_the_target_aspect():
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, 30:70] = 200  # the centre 40 columns
    cropped = center_crop(image, 1.0)
    assert cropped.shape == (40, 40, 3) and np.all(cropped == 200)
    assert center_crop(np.zeros((100, 40, 3)), 1.0).shape == (40, 40, 3)
    out = preprocess_image(image, (20, 20), mean=(0, 0, 0), std=(1, 1, 1))
    np.testing.assert_allclose(out, 200 / 255, rtol=1e-6)  # the dark sides were cropped away
    uncropped = preprocess_image(image, (20, 20), mean=(0, 0, 0), std=(1, 1, 1), crop=False)
    assert uncropped.min() == 0


def test_resize_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = preprocess_image(image, (24, 31), mean=(0, 0, 0), std=(1, 1, 1), crop=False)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
        size=(24, 31),
        mode="bilinear",
        align_corners=False,
        antialias=False,
    )[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_preprocess_imports_no_torch():
    code = "import sys, policy_runtime.preprocess; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_frames_are_stacked_in_the_policy_camera_order():
    frames = {
        "wrist": Frame(0, "wrist", np.full((30, 40, 3), 255, np.uint8)),
        "third_person": Frame(0, "third_person", np.zeros((60, 80, 3), np.uint8)),
    }
    out = preprocess_frames(frames, ("third_person", "wrist"), (16, 16), mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (2, 3, 16, 16) and out.dtype == np.float32
    assert out[0].max() == 0 and out[1].min() == 1
    with pytest.raises(UserError, match="needs camera.*top"):
        preprocess_frames(frames, ("top", "wrist"), (16, 16))


def test_bad_image_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(np.zeros((8, 8, 3), np.float32), (4, 4))


def arm_state() -> ArmState:
    pos = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    return ArmState(0, SO101_JOINTS, pos, -pos)


def base_state() -> BaseState:
    return BaseState(0, np.array([1.0, 2.0, 0.3]), 0.7, np.array([0.4, 0.1, 0.0]), -0.2)


def test_proprio_vector_follows_the_named_layout():
    layout = ProprioLayout(("base.vx", "base.wz", "base.yaw", "arm.elbow_flex", "arm.gripper.vel", "ee.z"))
    vec = layout.vector(arm_state(), base_state())
    assert vec.dtype == np.float32
    ee_z = forward(arm_state().positions).gripper[2, 3]
    np.testing.assert_allclose(vec, [0.4, -0.2, 0.7, 0.3, -0.6, ee_z], rtol=1e-6)


def test_proprio_without_base_is_nan_and_unknown_channels_are_named():
    vec = ProprioLayout(("base.x", "arm.shoulder_pan")).vector(arm_state(), None)
    assert np.isnan(vec[0]) and vec[1] == pytest.approx(0.1)
    with pytest.raises(UserError, match="arm.elbow, base.speed"):
        ProprioLayout(("arm.elbow", "base.speed", "arm.gripper"))
