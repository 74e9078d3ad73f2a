"""Write RealSense recordings from numpy images with librealsense's software device and recorder.

The file is what a real camera records (device info with its serial, one RGB8 colour stream, frames with
device timestamps and frame numbers), so `drivers.realsense.RealSenseCamera` plays it back through the same
playback device as a recording made on the robot. Tests and benchmarks make their recordings with this; the
synthetic camera can be recorded the same way.

librealsense's playback paces frames by the host time at which they were recorded, so `write_recording`
sleeps between frames (`paced=True`) to give a recording that plays back at its frame rate.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from drivers.realsense import import_rs


def write_recording(
    path: str | Path,
    images: Iterable[np.ndarray],
    fps: float,
    serial: str = "000000000000",
    *,
    gaps_s: dict[int, float] | None = None,
    skip_numbers: Iterable[int] = (),
    paced: bool = True,
) -> int:
    """Record `images` (HxWx3 uint8 RGB, all one size) as a colour stream at `fps`; returns frames written.

    `gaps_s` {i: seconds} inserts a pause before frame i (a stalled stream: no frames, device time runs on);
    `skip_numbers` leaves frame numbers out (frames the device dropped).
    """
    rs = import_rs()
    path = Path(path)
    if path.suffix != ".db3":
        raise UserError(f"recording {path}: librealsense 2.59 writes ROS2 .db3 files; name it *.db3")
    gaps_s = gaps_s or {}
    skip = set(skip_numbers)
    images = [np.ascontiguousarray(image, dtype=np.uint8) for image in images]
    if not images:
        raise UserError(f"recording {path}: no frames to write")
    height, width = images[0].shape[:2]
    period_s = 1.0 / fps

    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, serial)
    device.register_info(rs.camera_info.name, "Software RealSense (anchorvla recording)")
    sensor = device.add_sensor("RGB Camera")
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx = intrinsics.fy = float(width)
    intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
    intrinsics.model = rs.distortion.none
    intrinsics.coeffs = [0.0] * 5
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
    stream.width, stream.height, stream.fps, stream.bpp = width, height, round(fps), 3
    stream.fmt = rs.format.rgb8
    stream.intrinsics = intrinsics
    profile = sensor.add_video_stream(stream).as_video_stream_profile()

    path.parent.mkdir(parents=True, exist_ok=True)
    recorder = rs.recorder(str(path), device)
    sensor.open(profile)
    sensor.start(rs.frame_queue(4))
    written, number, device_ms = 0, 0, 1000.0
    next_at = time.monotonic()
    try:
        for i, image in enumerate(images):
            if image.shape != (height, width, 3):
                raise UserError(
                    f"recording {path}: frame {i} is {image.shape}, expected {(height, width, 3)}"
                )
            gap = gaps_s.get(i, 0.0)
            device_ms += gap * 1e3
            next_at += gap
            while number in skip:
                number += 1
                device_ms += period_s * 1e3
                next_at += period_s
            if paced:
                time.sleep(max(0.0, next_at - time.monotonic()))
            frame = rs.software_video_frame()
            frame.pixels = image
            frame.bpp, frame.stride = 3, width * 3
            frame.timestamp = device_ms
            frame.domain = rs.timestamp_domain.hardware_clock
            frame.frame_number = number
            frame.profile = profile
            sensor.on_video_frame(frame)
            written += 1
            number += 1
            device_ms += period_s * 1e3
            next_at += period_s
    finally:
        sensor.stop()
        sensor.close()
        del recorder  # closes the file
    return written
