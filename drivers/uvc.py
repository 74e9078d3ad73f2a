"""UVC cameras (the usual SO-101 wrist camera) through FFmpeg's v4l2 input, by PyAV (the `av` wheel bundles FFmpeg).

One reader thread per camera decodes the stream and keeps only the newest frame, stamped on the monotonic clock
through the device's capture timestamps (`ClockMapper`, as for RealSense), so its age is what the slow loop sees.
When the stream ends or fails (unplugged: the read fails with ENODEV), the reader closes it and reopens the same
path every `reconnect_after_s` until it is back; meanwhile `latest()` keeps the last frame with its old timestamp,
so its age grows and the slow loop refuses it. Reads block until the next frame: a camera that goes silent without
an error is seen as stalled (its frames age) but is not reopened.

The source is a path: a V4L2 device (`/dev/...`, opened with format v4l2 at the configured size and rate), or
any stream FFmpeg reads, a file or a FIFO, decoded through the same code and paced by its timestamps like a
camera (tests, and replaying a recording). A camera is found by its serial through the stable name udev gives
it, /dev/v4l/by-id/usb-<maker>_<model>_<serial>-video-index0.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time

import numpy as np

from anchorvla.errors import DeviceError, UserError
from drivers.threaded_camera import ThreadedCamera

log = logging.getLogger("anchorvla.uvc")

BY_ID = "/dev/v4l/by-id"


def import_av():
    """PyAV, or one line saying what to install."""
    try:
        import av
    except ImportError:
        raise UserError(
            "PyAV is not installed (UVC cameras): pip install 'anchorvla-onboard[robot]'"
        ) from None
    return av


def device_for_serial(serial: str, by_id: str = BY_ID) -> str:
    """The capture node of the UVC camera with this serial (udev's stable name), or one line naming those present."""
    found = sorted(glob.glob(f"{glob.escape(by_id)}/*{glob.escape(serial)}*-video-index0"))
    if len(found) == 1:
        return found[0]
    present = (
        ", ".join(p.rsplit("/", 1)[-1] for p in glob.glob(f"{glob.escape(by_id)}/*-video-index0")) or "none"
    )
    what = "no" if not found else "more than one"
    raise DeviceError(
        f"{what} UVC camera with serial {serial!r} in {by_id} (present: {present}); "
        "set robot.cameras[].serial to one of them, or device to its path"
    )


class UVCCamera(ThreadedCamera):
    """Implements `drivers.protocols.Camera` for a V4L2 device or an FFmpeg-readable stream at `device`."""

    def __init__(
        self,
        name: str,
        device: str,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        reconnect_after_s: float = 1.0,
        stall_periods: float = 1.5,
    ):
        super().__init__(name, fps, stall_periods)
        self.device = str(device)
        self.width, self.height, self.fps = width, height, fps
        self.v4l2 = self.device.startswith("/dev/")
        self.reconnect_ns = int(reconnect_after_s * 1e9)
        self._av = import_av()
        self._reconnects = 0
        self._source = None  # the open av container

    @property
    def reconnects(self) -> int:
        return self._reconnects

    # --- FFmpeg --------------------------------------------------------------------------------------------

    def _open(self):
        av = self._av
        options = {}
        if self.v4l2:  # ask the camera for this mode; FFmpeg refuses one it does not offer
            options = {"video_size": f"{self.width}x{self.height}", "framerate": str(self.fps)}
        try:
            container = av.open(self.device, format="v4l2" if self.v4l2 else None, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise DeviceError(f"camera '{self.name}': cannot open {self.device}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise DeviceError(f"camera '{self.name}': {self.device} has no video stream")
        rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
        if rate:
            self.period_ns = round(1e9 / float(rate))
            self.stall_ns = int(self.stall_periods * self.period_ns)
        self._clock.reset()
        return container

    def _close(self) -> None:
        if self._source is not None:
            with contextlib.suppress(Exception):  # already broken: the device is gone
                self._source.close()
            self._source = None

    def _reconnect(self, why: str) -> None:
        log.warning("camera %s: %s; reconnecting to %s", self.name, why, self.device)
        self._close()
        while not self._stop.is_set():
            try:
                self._source = self._open()
            except DeviceError as exc:
                log.info("%s; retrying", exc)
                self._stop.wait(self.reconnect_ns / 1e9)
                continue
            self._reconnects += 1
            log.info("camera %s: reconnected", self.name)
            return

    def _read_loop(self) -> None:
        av = self._av
        while not self._stop.is_set():
            paced = not self.v4l2 and os.path.isfile(
                self.device
            )  # a file plays at its own rate, like a camera
            start = None  # (first frame's time s, monotonic s)
            try:
                for frame in self._source.decode(video=0):
                    if self._stop.is_set():
                        return
                    if paced and frame.time is not None:
                        start = start or (frame.time, time.monotonic())
                        self._stop.wait(max(0.0, start[1] + frame.time - start[0] - time.monotonic()))
                    self._take(frame)
                ended = "end of stream"
            except (av.error.FFmpegError, OSError) as exc:  # unplugged: the read fails (ENODEV)
                ended = str(exc)
            if not self._stop.is_set():
                self._reconnect(ended)

    def _take(self, frame) -> None:
        arrival = time.monotonic_ns()
        # A device stamps its frames at capture (the kernel's clock): map that to ours. Another stream's times only
        # count its frames, so its frames are as old as their arrival.
        t_ns = (
            self._clock.map(frame.time * 1000.0, arrival) if self.v4l2 and frame.time is not None else arrival
        )
        self._publish(t_ns, np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
