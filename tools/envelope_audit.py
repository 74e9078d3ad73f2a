"""Checks every command as it reaches a device against the configured envelope (the fault scenarios' judge).

The audit sits between the runtime and the devices, so it sees exactly what was sent: each arm goal must be
finite, inside the soft limits and within one tick's step of the previous goal (max_velocity * period, never
above max_step); each base velocity finite and inside the base limits.
"""

from __future__ import annotations

import time

import numpy as np

from drivers.types import ArmState
from safety.limits import Limits, step_bound

EPS = 1e-9


class EnvelopeAudit:
    """Wraps the arm and base; checks every command as it is sent against the configured envelope."""

    def __init__(self, limits: Limits, period_s: float):
        self.limits, self.period_s = limits, period_s
        self.violations: list[str] = []
        self.goals: list[tuple[int, np.ndarray]] = []
        self.moves: list[tuple[int, tuple[float, float, float]]] = []
        self.stop_moves: list[int] = []
        self.states: list[ArmState] = []

    def check_goal(self, goal: np.ndarray) -> None:
        lim = self.limits
        if not np.all(np.isfinite(goal)):
            self.violations.append(f"non-finite arm goal {goal}")
        elif np.any(goal < lim.soft_lo - EPS) or np.any(goal > lim.soft_hi + EPS):
            self.violations.append(f"arm goal outside the soft limits {goal}")
        elif self.goals and np.any(np.abs(goal - self.goals[-1][1]) > step_bound(lim, self.period_s) + EPS):
            self.violations.append(f"arm goal step above the rate limit {goal - self.goals[-1][1]}")
        self.goals.append((time.monotonic_ns(), np.array(goal, dtype=np.float64)))

    def check_move(self, v: tuple[float, float, float]) -> None:
        arr = np.array(v, dtype=np.float64)
        lim = self.limits
        if not np.all(np.isfinite(arr)) or np.any(arr < lim.base_lo - EPS) or np.any(arr > lim.base_hi + EPS):
            self.violations.append(f"base velocity outside the envelope {v}")
        self.moves.append((time.monotonic_ns(), v))


class AuditedArm:
    def __init__(self, inner, audit: EnvelopeAudit):
        self.inner, self.audit, self.joint_names = inner, audit, inner.joint_names

    def start(self) -> None:
        self.inner.start()

    def read_state(self) -> ArmState:
        state = self.inner.read_state()
        self.audit.states.append(state)
        return state

    def write_goal(self, positions: np.ndarray) -> None:
        self.audit.check_goal(positions)
        self.inner.write_goal(positions)

    def release_torque(self) -> None:
        self.inner.release_torque()

    def stop(self) -> None:
        self.inner.stop()


class AuditedBase:
    def __init__(self, inner, audit: EnvelopeAudit):
        self.inner, self.audit = inner, audit

    def start(self) -> None:
        self.inner.start()

    def read_state(self):
        return self.inner.read_state()

    def move(self, vx: float, vy: float, wz: float) -> None:
        self.audit.check_move((vx, vy, wz))
        self.inner.move(vx, vy, wz)

    def stop_move(self) -> None:
        self.audit.stop_moves.append(time.monotonic_ns())
        self.inner.stop_move()

    def damp(self) -> None:
        self.inner.damp()

    def stop(self) -> None:
        self.inner.stop()
