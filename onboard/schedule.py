"""ChunkSchedule: which action the fast loop runs at which tick.

Action k of a chunk belongs to time `t_obs + k*dt`. When a chunk arrives, actions whose time is before the
next tick are dropped (and counted); of the rest, at most `execute_horizon` are served. Where the new chunk
covers ticks the previous plan still holds, the two are blended (none, linear cross-fade, exponential).
The schedule is time-based, so a control rate different from the policy's rate picks the nearest action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from policy_runtime.types import ActionChunk


@dataclass(frozen=True)
class PlannedAction:
    t_ns: int
    action: np.ndarray
    chunk: ActionChunk
    j: int  # index of this action in its chunk


def blend_weight(mode: str, i: int, ticks: int, decay: float) -> float:
    """Weight of the newer chunk at the i-th overlapping step (0-based); the older gets 1 - weight."""
    if mode == "none":
        return 1.0
    if mode == "linear":
        return min(1.0, (i + 1) / (ticks + 1))
    if mode == "exponential":
        return 1.0 - math.exp(-decay * (i + 1))
    raise ValueError(f"unknown blending mode {mode!r}")


class ChunkSchedule:
    """`late`: what a chunk that arrives with fewer than `execute_horizon` fresh actions left does. 'drop' serves
    what is left on time (the plan thins and the arm holds until the next chunk); 'shift' serves it from the next
    tick on, late, starting as far back in the chunk as it takes to cover the inference latency again, so the
    arm keeps moving along the plan, one latency behind it, instead of holding."""

    def __init__(
        self,
        execute_horizon: int,
        blending: str = "linear",
        blend_ticks: int = 3,
        decay: float = 0.5,
        late: str = "drop",
    ):
        if execute_horizon < 1:
            raise ValueError("execute_horizon must be >= 1")
        if late not in ("drop", "shift"):
            raise ValueError(f"unknown late-chunk mode {late!r}")
        self.late = late
        self.execute_horizon = execute_horizon
        self.blending = blending
        self.blend_ticks = blend_ticks
        self.decay = decay
        self._plan: list[PlannedAction] = []
        self.stale_dropped = 0
        self.chunks_accepted = 0
        self.late_shifted = 0  # chunks served late ('shift')

    def push(self, chunk: ActionChunk, next_tick_ns: int, latency_ns: int = 0) -> int:
        """Add a chunk; returns how many of its actions were already in the past. `latency_ns`: the slow loop's
        estimate of the next inference's latency (the late 'shift' mode covers it)."""
        half = chunk.dt_ns // 2
        first = max(0, math.ceil((next_tick_ns - half - chunk.t_obs_ns) / chunk.dt_ns))
        shift = 0
        if self.late == "shift" and len(chunk) - first < self.execute_horizon:
            needed = max(self.execute_horizon, math.ceil(latency_ns / chunk.dt_ns) + 1)
            start = max(0, min(first, len(chunk) - needed))
            shift, first = next_tick_ns - chunk.time_of(start), start
        dropped = min(first, len(chunk))
        self.stale_dropped += dropped
        last = len(chunk) if shift else min(len(chunk), first + self.execute_horizon)
        served = range(first, last)
        if not served:
            return dropped
        self.late_shifted += bool(shift)
        new = [
            PlannedAction(chunk.time_of(k) + shift, np.asarray(chunk.actions[k], dtype=np.float64), chunk, k)
            for k in served
        ]
        old = {p.t_ns: p for p in self._plan if p.t_ns >= next_tick_ns - half}
        merged: list[PlannedAction] = []
        overlap = 0
        for p in new:
            prev = self._nearest(old.values(), p.t_ns, half)
            if prev is not None and self.blending != "none":
                w = blend_weight(self.blending, overlap, self.blend_ticks, self.decay)
                p = PlannedAction(p.t_ns, w * p.action + (1.0 - w) * prev.action, p.chunk, p.j)
                overlap += 1
            merged.append(p)
        self._plan = merged
        self.chunks_accepted += 1
        return dropped

    @staticmethod
    def _nearest(plan, t_ns: int, tolerance_ns: int) -> PlannedAction | None:
        best = None
        for p in plan:
            if abs(p.t_ns - t_ns) <= tolerance_ns and (
                best is None or abs(p.t_ns - t_ns) < abs(best.t_ns - t_ns)
            ):
                best = p
        return best

    def action_at(self, tick_ns: int, tolerance_ns: int) -> PlannedAction | None:
        """The planned action for the tick at `tick_ns` (nearest within tolerance); forgets older ones."""
        self._plan = [p for p in self._plan if p.t_ns >= tick_ns - tolerance_ns]
        return self._nearest(self._plan, tick_ns, tolerance_ns)

    def planned_at(self, t_ns: int, tolerance_ns: int) -> PlannedAction | None:
        """The action planned for `t_ns` (nearest within tolerance), forgetting nothing."""
        return self._nearest(self._plan, t_ns, tolerance_ns)

    def clear(self) -> None:
        self._plan = []

    @property
    def planned_until_ns(self) -> int | None:
        """Time of the last planned action, or None when nothing is planned."""
        return self._plan[-1].t_ns if self._plan else None
