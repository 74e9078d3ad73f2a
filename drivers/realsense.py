"""RealSense colour cameras through librealsense (pyrealsense2): live by serial number, or played back from a
recording through librealsense's playback device.

Both go through one code path: a librealsense pipeline configured either for a device (`enable_device`) or
for a file (`enable_device_from_file`), read by one thread per camera that keeps only the newest frame. Each
frame's device timestamp is mapped to `time.monotonic_ns()` (`ClockMapper`), so the slow loop can compare
frame ages with its own clock. When no frame came for `stall_periods` frame periods the camera reports a
stall (`stalled`, `age_s()`); `latest()` keeps returning the last frame with its old timestamp, so its age
grows and the slow loop refuses it. After `reconnect_after_s` of silence (an unplug) the reader closes the
pipeline and reopens it, waiting for the serial to come back. A recording's silences are part of it: playback
is not reopened unless a `reconnect_after_s` is given (tests do, to drive the reconnect path).

Files: this librealsense (2.59) records ROS2 `.db3` files and plays back both `.db3` and the legacy ROS1
`.bag` it recorded before. pyrealsense2 needs libusb-1.0 at run time (Debian/Ubuntu: `libusb-1.0-0`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchorvla.errors import DeviceError, UserError
from drivers.threaded_camera import ThreadedCamera

log = logging.getLogger("anchorvla.realsense")

RECORDING_SUFFIXES = (".db3", ".bag")


def import_rs():
    """pyrealsense2, or one line saying what to install."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        if "libusb" in str(exc):
            raise UserError(
                "pyrealsense2 needs libusb-1.0 at run time: apt-get install libusb-1.0-0 (or run tools/install.sh)"
            ) from None
        raise UserError("pyrealsense2 is not installed: pip install 'anchorvla-onboard[robot]'") from None
    return rs


def connected_serials() -> list[str]:
    """Serial numbers of the RealSense devices librealsense sees now."""
    rs = import_rs()
    return sorted(d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices())


@dataclass(frozen=True)
class CameraStats:
    frames: int  # frames received since start
    drops: int  # frames the device numbered but never delivered (frame-number gaps)
    reconnects: int
    stalls: int  # times the stream went silent for longer than the stall limit
    age_s: float | None  # age of the newest frame now (None before the first)
    stalled: bool
    ended: bool  # a playback reached the end of its file


class RealSenseCamera(ThreadedCamera):
    """One colour stream: live (`serial`) or played back (`path`). Implements `drivers.protocols.Camera`.

    `realtime=False` plays a recording as fast as the reader thread takes frames (every frame passes through
    `latest`'s slot, the newest wins). `record` (live only) records the stream to a `.db3` file while running;
    after a reconnect the recording goes on in `<stem>.part1.db3`, `.part2`, ... so nothing is overwritten.
    """

    def __init__(
        self,
        name: str,
        *,
        serial: str | None = None,
        path: Path | None = None,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        realtime: bool = True,
        loop: bool = False,
        record: Path | None = None,
        stall_periods: float = 1.5,
        reconnect_after_s: float | None = None,
    ):
        if (serial is None) == (path is None):
            raise UserError(f"camera '{name}': give exactly one of serial (live camera) or path (recording)")
        if path is not None:
            path = Path(path)
            if path.suffix not in RECORDING_SUFFIXES or not path.is_file():
                raise UserError(f"camera '{name}': recording {path} not found or not a .db3/.bag file")
        if record is not None and Path(record).suffix != ".db3":
            raise UserError(
                f"camera '{name}': record to a .db3 file (librealsense 2.59 writes ROS2 .db3), got {record}"
            )
        super().__init__(name, fps, stall_periods)
        self.serial, self.path = serial, path
        self.width, self.height, self.fps = width, height, fps
        self.realtime, self.loop, self.record = realtime, loop, record
        if reconnect_after_s is None:
            reconnect_after_s = 1.0 if serial is not None else math.inf  # live: 1 s; playback: never
        self.reconnect_ns = reconnect_after_s * 1e9
        self._rs = import_rs()
        self._drops = self._reconnects = self._stalls = 0
        self._last_frame_number: int | None = None
        self._last_device_ms: float | None = None
        self._source = None  # the started librealsense pipeline
        self._ended = False

    # --- health --------------------------------------------------------------------------------------------

    def stats(self) -> CameraStats:
        return CameraStats(
            self._frames, self._drops, self._reconnects, self._stalls, self.age_s(), self.stalled, self._ended
        )

    # --- librealsense --------------------------------------------------------------------------------------

    def _config(self, part: int):
        """Pipeline config; `part` numbers the openings, so a recording after a reconnect goes to a new file."""
        rs = self._rs
        cfg = rs.config()
        if self.path is not None:
            cfg.enable_device_from_file(str(self.path), repeat_playback=self.loop)
            cfg.enable_stream(rs.stream.color)  # a recording has the resolution and format it was made with
        else:
            serials = connected_serials()
            if self.serial not in serials:
                present = ", ".join(serials) if serials else "none"
                raise DeviceError(
                    f"camera '{self.name}': no RealSense with serial {self.serial}; connected: {present} "
                    "(check the cable, or set robot.cameras[].serial to one of them)"
                )
            cfg.enable_device(self.serial)
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            if self.record is not None:
                record = Path(self.record)
                if part:
                    record = record.with_name(f"{record.stem}.part{part}{record.suffix}")
                cfg.enable_record_to_file(str(record))
        return cfg

    def _open(self, part: int = 0):
        rs = self._rs
        cfg = self._config(part)
        self._ended = False
        self._last_frame_number = self._last_device_ms = None
        self._clock.reset()
        pipeline = rs.pipeline()
        try:
            if self.path is not None:
                # Resolve first: the context keeps this playback device for the file and start() uses it, so the
                # playback mode holds from the first frame (set after start(), a slow reader could lose frames).
                resolved = cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback()
                resolved.set_real_time(self.realtime)
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            what = (
                f"recording {self.path}"
                if self.path
                else f"serial {self.serial} at {self.width}x{self.height}@{self.fps} RGB8"
            )
            raise DeviceError(f"camera '{self.name}': librealsense could not start {what}: {exc}") from None
        stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        if stream.format() != rs.format.rgb8:
            pipeline.stop()
            raise DeviceError(
                f"camera '{self.name}': {self.path} holds {stream.format()} colour, expected RGB8"
            )
        self.period_ns = round(1e9 / stream.fps())
        self.stall_ns = int(self.stall_periods * self.period_ns)
        return pipeline

    def _close(self) -> None:
        if self._source is not None:
            with contextlib.suppress(RuntimeError):  # already stopped, or the device is gone
                self._source.stop()
            self._source = None

    def _playback_ended(self) -> bool:
        try:
            device = self._source.get_active_profile().get_device()
        except RuntimeError:
            return False
        return (
            device.is_playback() and device.as_playback().current_status() == self._rs.playback_status.stopped
        )

    def _reconnect(self) -> None:
        log.warning("camera %s: no frame for %.1f s, reconnecting", self.name, self.silence_s())
        self._close()
        while not self._stop.is_set():
            try:
                self._quiet_since_ns = time.monotonic_ns()
                self._source = self._open(part=self._reconnects + 1)
                self._reconnects += 1
                log.info("camera %s: reconnected", self.name)
                return
            except DeviceError as exc:
                log.warning("%s; retrying", exc)
                self._stop.wait(1.0)

    def _read_loop(self) -> None:
        timeout_ms = max(5, min(100, self.period_ns // 2_000_000))
        in_stall = False
        while not self._stop.is_set():
            try:
                ok, frames = self._source.try_wait_for_frames(timeout_ms)
            except RuntimeError as exc:  # the device went away under the pipeline
                log.warning("camera %s: %s", self.name, exc)
                ok, frames = False, None
            if ok:
                color = frames.get_color_frame()
                if color:
                    self._take(color)
                    in_stall = False
                continue
            silence = time.monotonic_ns() - self._quiet_since_ns
            if silence > self.stall_ns and not in_stall:
                in_stall = True
                self._stalls += 1
                log.warning("camera %s: stalled (no frame for %.0f ms)", self.name, silence / 1e6)
            if self.path is not None and not self._ended and self._playback_ended():
                self._ended = True
                log.info("camera %s: end of recording %s", self.name, self.path)
            if not self._ended and silence > self.reconnect_ns:
                self._reconnect()

    def _take(self, color) -> None:
        arrival = time.monotonic_ns()
        device_ms = color.get_timestamp()
        number = color.get_frame_number()
        if self._last_device_ms is not None and device_ms <= self._last_device_ms:
            self._clock.reset()  # the device clock restarted (replay from the start, device reset)
            self._last_frame_number = None
        if self._last_frame_number is not None and number > self._last_frame_number + 1:
            self._drops += number - self._last_frame_number - 1
        self._last_frame_number, self._last_device_ms = number, device_ms
        t_ns = self._clock.map(device_ms, arrival)
        image = np.array(color.get_data(), dtype=np.uint8, copy=True)  # frees librealsense's buffer now
        self._publish(t_ns, image)
