"""The UVC camera driver through PyAV's FFmpeg, on what this machine has: a live Y4M stream through a FIFO (frame
age, a stalled writer, an unplug and the reconnect), and a Y4M file played at its own rate. The device path is the
only difference from a real camera: a `/dev/...` path opens FFmpeg's v4l2 input instead. Not tested here: a real
V4L2 device (its mode options, the kernel's capture timestamps, the ENODEV of an unplug)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from anchorvla.errors import DeviceError
from drivers.uvc import UVCCamera, device_for_serial
from onboard.config import Config
from onboard.devices import build_cameras

W, H, FPS = 64, 48, 15


def y4m_header() -> bytes:
    return f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 C420jpeg\n".encode()


def y4m_frame(luma: int) -> bytes:
    y = np.full((H, W), luma, np.uint8).tobytes()
    chroma = np.full((H // 2, W // 2), 128, np.uint8).tobytes()
    return b"FRAME\n" + y + chroma + chroma


def rgb_of(luma: int) -> float:
    """The RGB value of a grey Y4M pixel (limited-range luma)."""
    return (luma - 16) * 255 / 219


def wait_for(predicate, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


class FifoWriter:
    """A camera on the other end of a FIFO: writes Y4M frames at 15 fps in a thread until paused or closed."""

    def __init__(self, path, first_luma: int):
        self.fd = os.open(path, os.O_RDWR)  # opening read-write does not wait for the reader
        os.write(self.fd, y4m_header() + y4m_frame(first_luma))
        self.luma = first_luma
        self.running = threading.Event()
        self.running.set()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def _write(self):
        while not self.closed.is_set():
            if self.running.is_set():
                self.luma = 60 + (self.luma - 59) % 140  # 60..199
                os.write(self.fd, y4m_frame(self.luma))
            time.sleep(1 / FPS)

    def close(self):
        self.closed.set()
        self.thread.join()
        os.close(self.fd)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "camera.fifo"
    os.mkfifo(path)
    return path


def test_fifo_stream_newest_frame_age_stall_unplug_and_reconnect(fifo):
    writer = FifoWriter(fifo, first_luma=60)
    camera = UVCCamera("wrist", str(fifo), width=W, height=H, fps=FPS, reconnect_after_s=0.1)
    camera.start()
    try:
        wait_for(lambda: camera.latest() is not None and camera.latest().seq >= 5)
        frame = camera.latest()
        assert frame.camera == "wrist" and frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert abs(int(frame.image[0, 0, 0]) - rgb_of(writer.luma)) <= 5  # the newest frame, not an old one
        assert camera.age_s() < 0.5 and not camera.stalled

        writer.running.clear()  # the camera stops delivering
        time.sleep(0.4)
        assert camera.stalled and camera.age_s() > 0.3
        writer.running.set()
        seq = camera.latest().seq
        wait_for(lambda: camera.latest().seq > seq + 2)
        assert camera.age_s() < 0.5 and not camera.stalled

        writer.close()  # unplugged: the stream ends
        time.sleep(0.3)
        assert camera.stalled and camera.age_s() > 0.2 and camera.reconnects == 0
        writer = FifoWriter(fifo, first_luma=150)  # plugged back in
        wait_for(lambda: camera.reconnects == 1 and camera.latest().image[0, 0, 0] >= rgb_of(150) - 2)
        assert camera.age_s() < 0.5
    finally:
        stopper = threading.Thread(target=camera.stop)
        stopper.start()
        writer.close()  # unblocks a read in flight
        stopper.join()


def test_a_file_plays_at_its_own_rate_and_reopens_at_its_end(tmp_path):
    path = tmp_path / "clip.y4m"
    path.write_bytes(y4m_header() + b"".join(y4m_frame(10 * i) for i in range(8)))  # 8 frames: 0.53 s
    camera = UVCCamera("wrist", str(path), width=W, height=H, fps=FPS, reconnect_after_s=0.05)
    camera.start()
    try:
        wait_for(lambda: camera.latest() is not None)
        time.sleep(0.2)
        assert camera.latest().seq < 7  # paced by its timestamps, not decoded at once
        wait_for(lambda: camera.reconnects >= 1 and camera.latest().seq >= 9)  # replayed after its end
    finally:
        camera.stop()


def test_missing_device_and_serials_are_one_line(tmp_path):
    with pytest.raises(DeviceError, match="cannot open"):
        UVCCamera("wrist", str(tmp_path / "video9")).start()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-Maker_Cam_SN0001-video-index0").symlink_to(tmp_path)
    (by_id / "usb-Maker_Cam_SN0001-video-index1").symlink_to(tmp_path)
    assert device_for_serial("SN0001", str(by_id)) == str(by_id / "usb-Maker_Cam_SN0001-video-index0")
    with pytest.raises(
        DeviceError, match=r"no UVC camera with serial 'SN0002'.*present: usb-Maker_Cam_SN0001"
    ):
        device_for_serial("SN0002", str(by_id))


def test_config_driver_uvc_builds_the_camera_on_its_device(tmp_path):
    config = Config.model_validate(
        {"robot": {"cameras": [{"name": "wrist", "driver": "uvc", "device": str(tmp_path / "clip.y4m")}]}}
    )
    (camera,) = build_cameras(config)
    assert isinstance(camera, UVCCamera) and camera.device == str(tmp_path / "clip.y4m") and not camera.v4l2
    assert UVCCamera("wrist", "/dev/video0").v4l2
