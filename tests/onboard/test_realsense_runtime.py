"""The runtime with two played-back RealSense recordings, one of which stalls: observations whose frames are older
than control.max_frame_age_s are refused and counted, and no chunk is computed from them."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.realsense import RealSenseCamera
from onboard.config import Config
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinArm, StandinBase, StandinEngine
from tests.realsense_helpers import numbered_images, record_together

pytest.importorskip("pyrealsense2", reason="needs pyrealsense2 and libusb-1.0 (apt-get install libusb-1.0-0)")

FPS = 30
MAX_AGE_S = 0.1


def test_stale_frames_are_refused_and_counted(tmp_path):
    third, wrist = tmp_path / "third_person.db3", tmp_path / "wrist.db3"
    # 1.3 s of frames; the wrist stream goes silent for 0.5 s after 0.3 s
    record_together(
        {
            third: dict(images=numbered_images(40, 1), fps=FPS),
            wrist: dict(images=numbered_images(24, 2), fps=FPS, gaps_s={9: 0.5}),
        }
    )
    config = Config.model_validate(
        {
            "control": {"rate_hz": 15, "max_frame_age_s": MAX_AGE_S},
            "policy": {"standin": {"compute_ms": 10, "chunk_length": 10}, "execute_horizon": 2},
        }
    )
    joints = tuple(config.robot.arm.joint_names)
    cameras = [
        RealSenseCamera("third_person", path=third, fps=FPS),
        RealSenseCamera("wrist", path=wrist, fps=FPS),
    ]
    engine = StandinEngine(joints, round(1e9 / 15), compute_ms=10, chunk_length=10)
    runtime = Runtime(config, Devices(StandinArm(joints), StandinBase(), cameras), engine)
    observed = []
    runtime.slow.chunk_listeners.append(lambda obs, chunk: observed.append(obs))
    summary = run_event_loop(runtime.run(duration_s=2.0))  # past the end of both recordings

    ages = [obs.frame_ages_s() for obs in observed]
    assert summary["chunks"] == len(observed) == engine.calls > 3
    assert all(set(a) == {"third_person", "wrist"} for a in ages)
    assert max(max(a.values()) for a in ages) <= MAX_AGE_S  # no chunk from a stale frame
    assert summary["stale_observations"] > 0
    # during the wrist stall no chunk was computed; chunks resumed with the stream
    times_s = np.array([obs.t_ns for obs in observed]) / 1e9
    assert np.diff(times_s).max() >= 0.5 - MAX_AGE_S - 2 / FPS
    wrist_red = [int(obs.frames["wrist"].image[0, 0, 0]) for obs in observed]
    assert min(wrist_red) <= 8 < max(wrist_red)
    # and none after the recordings ended and their last frames aged past the limit
    last_frame_ns = max(cam.latest().t_ns for cam in cameras)
    assert observed[-1].t_ns <= last_frame_ns + MAX_AGE_S * 1e9
    assert summary["underruns"] > 0  # the fast loop held the arm when the plan ran out
    assert summary["exit_reason"] == "duration"
