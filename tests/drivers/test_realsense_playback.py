"""RealSense playback through librealsense: recordings made here with the software device and recorder, played
back by `RealSenseCamera` through the same pipeline code the robot's live cameras use."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from anchorvla.errors import DeviceError, UserError
from drivers.realsense import RealSenseCamera
from drivers.threaded_camera import ClockMapper
from onboard.config import Config
from onboard.devices import build_cameras
from tests.realsense_helpers import numbered_images, poll_new_frames, record_together

pytest.importorskip("pyrealsense2", reason="needs pyrealsense2 and libusb-1.0 (apt-get install libusb-1.0-0)")

FPS = 30
PERIOD_S = 1 / FPS


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    paths = {
        "third_person": d / "third_person.db3",
        "wrist": d / "wrist.db3",
        "stall": d / "stall.db3",
        "drops": d / "drops.db3",
        "long_gap": d / "long_gap.db3",
    }
    record_together(
        {
            paths["third_person"]: dict(images=numbered_images(24, 1), fps=FPS, serial="111111111111"),
            paths["wrist"]: dict(images=numbered_images(24, 2), fps=FPS, serial="222222222222"),
            paths["stall"]: dict(images=numbered_images(16, 3), fps=FPS, gaps_s={8: 0.4}),
            paths["drops"]: dict(images=numbered_images(12, 4), fps=FPS, skip_numbers=[5, 6]),
            paths["long_gap"]: dict(images=numbered_images(4, 5), fps=FPS, gaps_s={2: 1.2}),
        }
    )
    return paths


def test_two_cameras_play_back_in_order_at_the_recorded_rate(recordings):
    cams = [RealSenseCamera(name, path=recordings[name], fps=FPS) for name in ("third_person", "wrist")]
    for cam in cams:
        cam.start()
    try:
        results = {cam.name: poll_new_frames(cam, 1.1)[0] for cam in cams[:1]}
        results["wrist"] = [(0, cams[1].latest())]  # read after: the wrist stream ran in parallel
        stats = {cam.name: cam.stats() for cam in cams}
    finally:
        for cam in cams:
            cam.stop()
    seen = results["third_person"]
    frames = [f for _, f in seen]
    assert len(frames) >= 20  # polled every 2 ms: every one of the 24 frames, bar scheduling hiccups
    red = [int(f.image[0, 0, 0]) for f in frames]
    assert red == sorted(red) and red[-1] == 23, red  # in recorded order, through to the last
    assert all(int(f.image[0, 0, 2]) == 1 for f in frames)  # this camera's stream, not the other's
    t = np.array([f.t_ns for f in frames])
    assert np.all(np.diff(t) > 0)
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    # frame time is on the monotonic clock: never after the frame was seen, and not long before
    ages_ms = np.array([(now - f.t_ns) / 1e6 for now, f in seen])
    assert ages_ms.min() >= 0 and np.median(ages_ms) < 15, ages_ms
    # the recorded rate: device timestamps are 1/30 s apart, and so are the mapped ones
    per_frame = np.diff(t) / np.diff([int(f.image[0, 0, 0]) for f in frames]) / 1e9
    assert abs(np.median(per_frame) - PERIOD_S) < 0.002, per_frame
    assert stats["third_person"].frames == 24 and stats["third_person"].drops == 0
    wrist_last = results["wrist"][0][1]
    assert wrist_last is not None and int(wrist_last.image[0, 0, 2]) == 2 and stats["wrist"].frames == 24
    assert stats["third_person"].ended and stats["wrist"].ended


def test_stalled_stream_is_reported_within_two_frame_periods_and_keeps_its_old_frame(recordings):
    cam = RealSenseCamera("stall", path=recordings["stall"], fps=FPS)
    cam.start()
    try:
        seen, polls = poll_new_frames(cam, 1.0)
        stats = cam.stats()
    finally:
        cam.stop()
    by_red = {int(f.image[0, 0, 0]): (now, f) for now, f in seen}
    assert 7 in by_red and 8 in by_red
    before_gap_ns, frame7 = by_red[7]
    resumed_ns = by_red[8][0]
    assert (resumed_ns - before_gap_ns) / 1e9 > 0.3  # the recorded gap is played back
    during = [(t0, t1, stalled, f) for t0, t1, stalled, f in polls if before_gap_ns < t0 and t1 < resumed_ns]
    period_ns = PERIOD_S * 1e9
    late = [stalled for t0, _, stalled, _ in during if t0 - frame7.t_ns > 2 * period_ns]
    early = [stalled for _, t1, stalled, _ in during if t1 - before_gap_ns < period_ns]
    assert late and all(late)  # reported once 2 frame periods passed since the last frame's capture
    assert early and not any(early)  # and not before a frame was due
    # latest() keeps the last frame, with its old capture time, so its age grows through the stall
    assert all(f.seq == frame7.seq and f.t_ns == frame7.t_ns for _, _, _, f in during)
    assert [f.seq for _, f in seen] == sorted(f.seq for _, f in seen)
    assert stats.stalls >= 2  # the gap, then the end of the recording
    assert stats.ended and stats.stalled and stats.age_s > 2 * PERIOD_S


def test_a_silence_in_a_recording_is_played_not_reopened(recordings):
    cam = RealSenseCamera("long_gap", path=recordings["long_gap"], fps=FPS)  # live cameras reopen after 1 s
    cam.start()
    try:
        seen, _ = poll_new_frames(cam, 1.6)
        stats = cam.stats()
    finally:
        cam.stop()
    assert [int(f.image[0, 0, 0]) for _, f in seen] == [0, 1, 2, 3]
    assert (seen[2][0] - seen[1][0]) / 1e9 > 1.1
    assert stats.reconnects == 0 and stats.frames == 4


def test_dropped_frames_are_counted(recordings):
    cam = RealSenseCamera("drops", path=recordings["drops"], fps=FPS, realtime=False)
    cam.start()
    try:
        deadline = time.monotonic() + 3
        while not cam.stats().ended and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = cam.stats()
    finally:
        cam.stop()
    assert stats.frames == 12 and stats.drops == 2


def test_as_fast_as_read_is_faster_than_real_time(recordings):
    cam = RealSenseCamera("wrist", path=recordings["wrist"], fps=FPS, realtime=False)
    t0 = time.monotonic()
    cam.start()
    try:
        while not cam.stats().ended and time.monotonic() - t0 < 3:
            time.sleep(0.002)
        elapsed = time.monotonic() - t0
        stats = cam.stats()
    finally:
        cam.stop()
    assert stats.frames == 24 and int(cam.latest().image[0, 0, 0]) == 23
    assert elapsed < 23 * PERIOD_S  # the 0.77 s recording, read faster than it was made


def test_silent_stream_is_reopened_once_its_device_is_back(recordings, tmp_path, caplog):
    """A stream that stops (an unplug) is closed, then reopened, retrying while its device is missing."""
    path = tmp_path / "camera.db3"
    shutil.copy(recordings["third_person"], path)
    cam = RealSenseCamera("third_person", path=path, fps=FPS, reconnect_after_s=0.2)
    cam.start()
    try:
        while cam.stats().frames < 5:
            time.sleep(0.005)
        cam._source.get_active_profile().get_device().as_playback().pause()  # frames stop mid-file
        paused_seq = cam.latest().seq
        away = path.rename(tmp_path / "unplugged.db3")  # and the device is gone
        time.sleep(0.6)  # past the 0.2 s of silence: the reopen fails, the camera retries every second
        while_unplugged = cam.stats()
        away.rename(path)  # plugged back in
        deadline = time.monotonic() + 4
        while cam.stats().reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        while cam.latest().seq == paused_seq and time.monotonic() < deadline:
            time.sleep(0.005)
        after = cam.latest()
        stats = cam.stats()
    finally:
        cam.stop()
    assert while_unplugged.reconnects == 0 and while_unplugged.stalled and while_unplugged.age_s > 0.5
    assert "retrying" in caplog.text
    assert stats.reconnects == 1 and stats.stalls >= 1
    assert after.seq > paused_seq
    assert int(after.image[0, 0, 0]) < 5  # the reopened playback starts over
    assert after.t_ns > time.monotonic_ns() - int(0.5e9)


def test_missing_serial_names_the_connected_ones():
    cam = RealSenseCamera("wrist", serial="123456789012")
    with pytest.raises(DeviceError) as err:
        cam.start()
    message = str(err.value)
    assert "123456789012" in message and "connected: none" in message and "\n" not in message


def test_bad_paths_and_missing_fields_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        RealSenseCamera("wrist", path=tmp_path / "nope.db3")
    with pytest.raises(UserError, match="exactly one"):
        RealSenseCamera("wrist")
    config = Config.model_validate({"robot": {"cameras": [{"name": "wrist", "driver": "bag"}]}})
    with pytest.raises(UserError, match="needs path"):
        build_cameras(config)
    config = Config.model_validate({"robot": {"cameras": [{"name": "wrist", "driver": "realsense"}]}})
    with pytest.raises(UserError, match="needs serial"):
        build_cameras(config)


def test_build_cameras_plays_a_recording_from_config(recordings):
    config = Config.model_validate(
        {
            "robot": {
                "cameras": [
                    {"name": "wrist", "driver": "bag", "path": str(recordings["wrist"]), "realtime": False}
                ]
            }
        }
    )
    (cam,) = build_cameras(config)
    cam.start()
    try:
        deadline = time.monotonic() + 3
        while not cam.stats().ended and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        cam.stop()
    assert cam.name == "wrist" and cam.stats().frames == 24


def test_clock_mapper_follows_the_least_delayed_frame():
    mapper = ClockMapper(window=4)
    # device clock 1000 ms, transport delays 5, 2, 9 ms: the mapping uses the 2 ms one for all
    t = [
        mapper.map(1000.0 + 33 * i, 10_000_000_000 + (33 * i + d) * 1_000_000)
        for i, d in enumerate((5, 2, 9))
    ]
    assert t[2] - t[1] == 33_000_000
    assert t[1] == 10_000_000_000 + (33 + 2) * 1_000_000
    assert t[2] <= 10_000_000_000 + (66 + 9) * 1_000_000  # never after its arrival
