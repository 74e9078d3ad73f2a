"""Waiting for absolute monotonic deadlines on the event loop, and latency statistics.

asyncio's own timers wake up to ~1-2 ms late (epoll's millisecond granularity). `wait_until` sleeps on the
event loop until `fine_wait_ns` before the deadline, then finishes with a blocking `time.sleep`, which wakes
within a fraction of a millisecond. The blocking part holds up other coroutines for at most `fine_wait_ns`;
inference runs in a worker thread and is not held up.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


async def wait_until(deadline_ns: int, fine_wait_ns: int) -> None:
    coarse = (deadline_ns - fine_wait_ns - time.monotonic_ns()) / 1e9
    if coarse > 0:
        await asyncio.sleep(coarse)
    remaining = (deadline_ns - time.monotonic_ns()) / 1e9
    if remaining > 0:
        time.sleep(remaining)


def sleep_until(deadline_ns: int) -> None:
    """The bare reference: a blocking sleep to an absolute deadline."""
    remaining = (deadline_ns - time.monotonic_ns()) / 1e9
    if remaining > 0:
        time.sleep(remaining)


class Samples:
    """A bounded series of samples (milliseconds) with percentiles for summaries."""

    def __init__(self, capacity: int = 1_000_000):
        self._values: list[float] = []
        self._capacity = capacity

    def add(self, value: float) -> None:
        if len(self._values) < self._capacity:
            self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def recent(self, n: int) -> list[float]:
        return self._values[-n:]

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        arr = np.asarray(self._values)
        return {
            "p50": round(float(np.percentile(arr, 50)), 4),
            "p99": round(float(np.percentile(arr, 99)), 4),
            "max": round(float(arr.max()), 4),
        }
