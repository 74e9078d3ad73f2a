"""What every real camera driver shares: one reader thread that keeps only the newest frame, stamped on the
monotonic clock, and the health figures the slow loop reads (`age_s`, `stalled`).

A driver subclasses `ThreadedCamera` and supplies `_open()` (returns the opened source, raises DeviceError),
`_close()` and `_read_loop()`, which runs until `self._stop` is set and hands each frame's pixels to
`_publish`. Device timestamps in another clock domain go through `ClockMapper` first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from drivers.types import Frame

log = logging.getLogger("anchorvla.camera")


class ClockMapper:
    """Maps device timestamps (ms, any domain) to monotonic ns.

    The offset is the smallest (arrival - device time) over the last `window` frames: the frame with the least
    transport delay pins the two clocks together, the window follows slow drift. A mapped time is never later
    than the frame's arrival, and it increases with the device time.
    """

    def __init__(self, window: int = 64):
        self._offsets: deque[int] = deque(maxlen=window)

    def reset(self) -> None:
        self._offsets.clear()

    def map(self, device_ms: float, arrival_ns: int) -> int:
        device_ns = round(device_ms * 1e6)
        self._offsets.append(arrival_ns - device_ns)
        return device_ns + min(self._offsets)


class ThreadedCamera:
    """Implements `drivers.protocols.Camera` around a reader thread; see the module docstring."""

    def __init__(self, name: str, fps: int, stall_periods: float):
        self.name = name
        self.stall_periods = stall_periods
        self.period_ns = round(1e9 / fps)
        # A driver updates both once it knows the stream's own rate.
        self.stall_ns = int(stall_periods * self.period_ns)
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._quiet_since_ns = 0  # capture time of the newest frame, or when the stream was (re)opened
        self._frames = 0
        self._clock = ClockMapper()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self):
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _read_loop(self) -> None:
        raise NotImplementedError

    # --- the Camera protocol -------------------------------------------------------------------------------

    def start(self) -> None:
        self._quiet_since_ns = time.monotonic_ns()
        self._source = self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():  # blocked in a read that never returns: closing under it would crash
                log.warning("camera %s: the reader is blocked; leaving it", self.name)
                return
            self._thread = None
        self._close()

    # --- health --------------------------------------------------------------------------------------------

    def silence_s(self) -> float:
        """Seconds since the newest frame was captured (since the stream was opened, before its first frame)."""
        return (time.monotonic_ns() - self._quiet_since_ns) / 1e9

    @property
    def stalled(self) -> bool:
        """No frame captured for `stall_periods` frame periods: set within 2 periods of the newest frame."""
        return self._thread is not None and time.monotonic_ns() - self._quiet_since_ns > self.stall_ns

    def age_s(self) -> float | None:
        frame = self.latest()
        return None if frame is None else (time.monotonic_ns() - frame.t_ns) / 1e9

    # --- for the reader thread -----------------------------------------------------------------------------

    def _publish(self, t_ns: int, image: np.ndarray) -> None:
        """The newest frame, captured at `t_ns` (kept after the previous one's time, whatever the device said)."""
        with self._lock:
            previous = self._latest
            t_ns = max(t_ns, previous.t_ns + 1) if previous is not None else t_ns
            self._latest = Frame(t_ns, self.name, image, self._frames)
            self._frames += 1
            self._quiet_since_ns = t_ns
