"""SO-101 forward kinematics and the synthetic cameras that render the emulated World."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers import robot_model as kin
from drivers.emulated.cameras import SyntheticCamera, camera_pose
from drivers.emulated.world import World, WorldObject
from onboard.config import Config
from onboard.devices import build_cameras

RED = (230, 20, 20)


def red_pixels(image: np.ndarray) -> np.ndarray:
    """Mask of pixels coloured like the red test object (shaded towards its rim)."""
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return (r > 110) & (g < 40) & (b < 40)


def test_forward_kinematics_at_zero_is_the_documented_L():
    poses = kin.forward(np.zeros(6))
    reach = kin.FOREARM + kin.WRIST_TO_ROLL + kin.ROLL_TO_GRIPPER
    np.testing.assert_allclose(poses.gripper[:3, 3], [reach, 0, kin.BASE_TO_PAN + kin.UPPER_ARM], atol=1e-12)
    np.testing.assert_allclose(poses.gripper[:3, :3], np.eye(3), atol=1e-12)


def test_forward_kinematics_joint_directions():
    up = kin.forward([0, np.pi / 2, 0, 0, 0, 0]).gripper[
        :3, 3
    ]  # lift forward: upper arm horizontal, rest down
    np.testing.assert_allclose(
        up, [kin.UPPER_ARM, 0, kin.BASE_TO_PAN - (kin.FOREARM + 0.064 + 0.098)], atol=1e-9
    )
    pan = kin.forward([np.pi / 2, 0, 0, 0, 0, 0]).gripper[:3, 3]  # pan left: the arm points along +y
    assert (
        pan[1] == pytest.approx(kin.FOREARM + kin.WRIST_TO_ROLL + kin.ROLL_TO_GRIPPER) and abs(pan[0]) < 1e-9
    )


def test_link_lengths_hold_for_any_pose():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(-2, 2, 6)
        points = kin.forward(q, kin.arm_root_in_world(rng.uniform(-1, 1, 3), 0.3)).points()
        lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
        expected = [kin.BASE_TO_PAN, 0, kin.UPPER_ARM, kin.FOREARM, kin.WRIST_TO_ROLL, kin.ROLL_TO_GRIPPER]
        np.testing.assert_allclose(lengths, expected, atol=1e-9)


def world_with_cube(position) -> World:
    world = World()
    world.objects["cube"] = WorldObject("cube", np.asarray(position, dtype=float), 0.03, RED)
    return world


def test_third_person_view_shows_the_object_and_follows_the_arm_and_base():
    world = world_with_cube([0.55, -0.15, 0.03])
    cam = SyntheticCamera("third_person", world, "third_person", 96, 96)
    first = cam.render_now().image
    assert first.shape == (96, 96, 3) and first.dtype == np.uint8
    assert red_pixels(first).sum() >= 4  # the task object is visible
    world.set_joints(np.array([0.8, 0.6, -0.4, 0.5, 0.0, 0.5]))
    arm_moved = cam.render_now().image
    assert np.abs(arm_moved.astype(int) - first).sum(axis=2).astype(bool).mean() > 0.005
    assert red_pixels(arm_moved).sum() == red_pixels(first).sum()  # the object did not move in this view
    world.set_base_pose(0.0, 0.0, 0.6)  # the camera rides on the base: the world turns in the image
    turned = cam.render_now().image
    assert np.abs(turned.astype(int) - arm_moved).sum(axis=2).astype(bool).mean() > 0.3
    world.objects["cube"].position = np.array([5.0, 5.0, 0.03])
    assert red_pixels(cam.render_now().image).sum() == 0


def test_wrist_view_rides_on_the_gripper():
    world = World()
    q = np.array([0.0, 0.9, 0.5, 0.6, 0.0, 0.5])
    world.set_joints(q)
    gripper = kin.forward(q, kin.arm_root_in_world(world.base_pose, world.base_height)).gripper
    ahead = (gripper @ np.array([0.15, 0.0, 0.0, 1.0]))[:3]  # just ahead of the jaws
    world.objects["cube"] = WorldObject("cube", ahead, 0.02, RED)
    cam = SyntheticCamera("wrist", world, "wrist", 96, 96)
    seen = red_pixels(cam.render_now().image)
    assert seen.sum() > 30
    rows, cols = np.nonzero(seen)
    assert abs(cols.mean() - 47.5) < 12  # centred left-right in the wrist image
    world.set_joints(q + np.array([1.5, -0.9, 0, 0, 0, 0]))  # pan and lift away: the cube leaves the view
    assert red_pixels(cam.render_now().image).sum() < seen.sum() / 4
    pose = camera_pose("wrist", q, world.base_pose, world.base_height)
    assert np.linalg.norm(pose[:3, 3] - gripper[:3, 3]) < 0.1


def test_camera_thread_gives_new_frames_and_stalls_on_request():
    cam = SyntheticCamera("third_person", world_with_cube([0.5, 0, 0.03]), "third_person", 48, 48, fps=50)
    cam.start()
    try:
        time.sleep(0.15)
        a = cam.latest()
        time.sleep(0.1)
        b = cam.latest()
        cam.stall()
        time.sleep(0.05)
        c = cam.latest()
        time.sleep(0.15)
        d = cam.latest()
    finally:
        cam.stop()
    assert b.seq > a.seq and b.t_ns > a.t_ns
    assert d.seq == c.seq and d.t_ns == c.t_ns  # stalled: the old frame with its old time
    assert time.monotonic_ns() - d.t_ns > 0.15e9


def test_build_cameras_synthetic_needs_the_world():
    config = Config.model_validate(
        {
            "robot": {
                "cameras": [
                    {"name": "third_person", "driver": "synthetic"},
                    {"name": "hand", "driver": "synthetic", "view": "wrist"},
                ]
            }
        }
    )
    with pytest.raises(UserError, match="emulated"):
        build_cameras(config)
    cams = build_cameras(config, world=World())
    assert [(c.name, c.view) for c in cams] == [("third_person", "third_person"), ("hand", "wrist")]
    bad = Config.model_validate({"robot": {"cameras": [{"name": "top", "driver": "synthetic"}]}})
    with pytest.raises(UserError, match="view"):
        build_cameras(bad, world=World())


def test_runtime_refuses_observations_from_a_stalled_synthetic_camera():
    from onboard.runtime import Devices, Runtime, run_event_loop
    from onboard.standins import StandinArm, StandinBase, StandinEngine

    max_age_s = 0.1
    config = Config.model_validate(
        {"control": {"rate_hz": 15, "max_frame_age_s": max_age_s}, "policy": {"execute_horizon": 2}}
    )
    joints = tuple(config.robot.arm.joint_names)
    world = world_with_cube([0.5, 0.0, 0.03])
    cams = [SyntheticCamera(v, world, v, 48, 48, fps=30) for v in ("third_person", "wrist")]
    engine = StandinEngine(joints, round(1e9 / 15), compute_ms=10, chunk_length=10)
    runtime = Runtime(config, Devices(StandinArm(joints), StandinBase(), cams), engine)
    observed = []
    runtime.slow.chunk_listeners.append(lambda obs, chunk: observed.append(obs))
    stalled_at = []

    def stall_wrist():
        cams[1].stall()
        stalled_at.append(time.monotonic_ns())

    timer = threading.Timer(0.5, stall_wrist)
    timer.start()
    try:
        summary = run_event_loop(runtime.run(duration_s=1.2))
    finally:
        timer.cancel()
    assert len(observed) > 2 and summary["stale_observations"] > 0
    assert all(max(obs.frame_ages_s().values()) <= max_age_s for obs in observed)
    assert observed[-1].t_ns <= stalled_at[0] + max_age_s * 1e9  # nothing computed from the stalled view
