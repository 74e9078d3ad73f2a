"""Shared by the RealSense tests: recordings made with librealsense's software device, and a frame poller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from drivers.realsense_record import write_recording

WIDTH, HEIGHT = 32, 24


def numbered_images(n: int, camera_tag: int = 0) -> list[np.ndarray]:
    """Frame i has every pixel's red = i (so the order can be read back) and blue = `camera_tag`."""
    images = []
    for i in range(n):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[..., 0] = i
        image[..., 2] = camera_tag
        images.append(image)
    return images


def record_together(specs: dict[Path, dict]) -> None:
    """Write several recordings at once (each paced at its frame rate), like cameras recording side by side."""
    threads = [
        threading.Thread(target=write_recording, args=(path,), kwargs=kw) for path, kw in specs.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def poll_new_frames(camera, seconds: float, every_s: float = 0.002):
    """Poll `latest()` and `stalled` for `seconds`.

    Returns (seen, polls): (arrival_ns, frame) for each new frame seen, and (before_ns, after_ns, stalled, frame)
    for every poll, where the stall state was read between before_ns and after_ns.
    """
    seen, polls = [], []
    end = time.monotonic() + seconds
    last_seq = None
    while time.monotonic() < end:
        frame = camera.latest()
        before = time.monotonic_ns()
        stalled = camera.stalled
        after = time.monotonic_ns()
        polls.append((before, after, stalled, frame))
        if frame is not None and frame.seq != last_seq:
            seen.append((before, frame))
            last_seq = frame.seq
        time.sleep(every_s)
    return seen, polls
