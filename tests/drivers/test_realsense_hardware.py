"""A real RealSense on the bench: set ANCHORVLA_REALSENSE_SERIAL to its serial number to run these."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from drivers.realsense import RealSenseCamera, connected_serials

SERIAL = os.environ.get("ANCHORVLA_REALSENSE_SERIAL")
pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(not SERIAL, reason="set ANCHORVLA_REALSENSE_SERIAL to test a connected RealSense"),
]


def test_live_camera_frames_are_fresh_and_recorded(tmp_path):
    assert SERIAL in connected_serials()
    record = tmp_path / "live.db3"
    cam = RealSenseCamera("bench", serial=SERIAL, width=640, height=480, fps=30, record=record)
    cam.start()
    try:
        time.sleep(1.5)
        frame = cam.latest()
        stats = cam.stats()
    finally:
        cam.stop()
    assert frame is not None and frame.image.shape == (480, 640, 3)
    assert stats.frames > 30 and not stats.stalled and stats.age_s < 0.1
    replay = RealSenseCamera("bench", path=record, realtime=False)
    replay.start()
    try:
        deadline = time.monotonic() + 10
        while not replay.stats().ended and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        replay.stop()
    assert replay.stats().frames > 0.9 * stats.frames
    assert np.asarray(replay.latest().image).shape == (480, 640, 3)
