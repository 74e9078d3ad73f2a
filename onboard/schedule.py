"""ChunkSchedule: which action the fast loop runs at which tick.

Action k of a chunk belongs to time `t_obs + k*dt`. When a chunk arrives, actions whose time is before the
next tick are dropped (and counted); of the rest, at most `execute_horizon` are served. Where the new chunk
covers ticks the previous plan still holds, the two are blended (none, linear cross-fade, exponential).
The schedule is time-based, so a control rate different from the policy's rate picks the nearest action.

A chunk conditioned on a prefix (real-time chunking: its first p actions were in-painted to what the plan runs
before it takes over, `push(continue_at=p)`) is not blended: it runs on from index p, where it continues the plan,
or from the fresh index when that comes first. `prefix` gives the slow loop those p actions for a chunk it starts.
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


def fresh_index(t_obs_ns: int, dt_ns: int, next_tick_ns: int) -> int:
    """The first action of a chunk observed at `t_obs_ns` whose time is not before the tick at `next_tick_ns`."""
    return max(0, math.ceil((next_tick_ns - dt_ns // 2 - t_obs_ns) / dt_ns))


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

    def first_served(
        self, length: int, t_obs_ns: int, dt_ns: int, next_tick_ns: int, latency_ns: int
    ) -> tuple[int, bool]:
        """(index of a chunk of `length` actions observed at `t_obs_ns` that the tick at `next_tick_ns` runs, whether
        it runs late): the first fresh index, or in 'shift' mode, when too few fresh actions are left, as far back
        as it takes to cover `latency_ns` again."""
        first = fresh_index(t_obs_ns, dt_ns, next_tick_ns)
        if self.late == "shift" and length - first < self.execute_horizon:
            needed = max(self.execute_horizon, math.ceil(latency_ns / dt_ns) + 1)
            start = max(0, min(first, length - needed))
            return start, next_tick_ns != t_obs_ns + start * dt_ns
        return first, False

    def prefix(
        self, length: int, t_obs_ns: int, dt_ns: int, next_tick_ns: int, latency_ns: int
    ) -> np.ndarray | None:
        """The actions (p, D) the plan runs before a chunk of `length` actions, observed at `t_obs_ns` and arriving
        for the tick at `next_tick_ns`, takes over at its index p (`first_served`): the planned actions of the p ticks
        before that tick, as far as the plan reaches (fewer where it ends before; the arm holds its last one). None
        when the plan has none of them."""
        p, _late = self.first_served(length, t_obs_ns, dt_ns, next_tick_ns, latency_ns)
        known = []
        for k in range(min(p, length - 1)):
            planned = self._nearest(self._plan, next_tick_ns - (p - k) * dt_ns, dt_ns // 2)
            if planned is None:
                break
            known.append(planned.action)
        return np.array(known) if known else None

    def push(
        self, chunk: ActionChunk, next_tick_ns: int, latency_ns: int = 0, continue_at: int | None = None
    ) -> int:
        """Add a chunk; returns how many of its actions were already in the past. `latency_ns`: the slow loop's
        estimate of the next inference's latency (the late 'shift' mode covers it). `continue_at`: the chunk is
        conditioned on a prefix of this many actions; it runs from there (late if its time has passed, then to its
        end) or from the fresh index if that comes first, without blending."""
        half = chunk.dt_ns // 2
        if continue_at is None:
            first, late = self.first_served(len(chunk), chunk.t_obs_ns, chunk.dt_ns, next_tick_ns, latency_ns)
        else:
            fresh = fresh_index(chunk.t_obs_ns, chunk.dt_ns, next_tick_ns)
            first, late = min(fresh, continue_at), continue_at < fresh
        shift = next_tick_ns - chunk.time_of(first) if late else 0
        dropped = min(first, len(chunk))
        self.stale_dropped += dropped
        last = len(chunk) if late else min(len(chunk), first + self.execute_horizon)
        served = range(first, last)
        if not served:
            return dropped
        self.late_shifted += late
        new = [
            PlannedAction(chunk.time_of(k) + shift, np.asarray(chunk.actions[k], dtype=np.float64), chunk, k)
            for k in served
        ]
        old = {p.t_ns: p for p in self._plan if p.t_ns >= next_tick_ns - half}
        merged: list[PlannedAction] = []
        overlap = 0
        for p in new:
            prev = self._nearest(old.values(), p.t_ns, half)
            if prev is not None and self.blending != "none" and continue_at is None:
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
    def last_chunk(self) -> ActionChunk | None:
        """The chunk the last planned action comes from, or None when nothing is planned."""
        return self._plan[-1].chunk if self._plan else None

    @property
    def planned_until_ns(self) -> int | None:
        """Time of the last planned action, or None when nothing is planned."""
        return self._plan[-1].t_ns if self._plan else None
