"""The safety layer the fast loop calls every tick.

`SafetyLayer.filter` turns a desired command into one inside the envelope; non-finite values never pass
(the arm holds, the base stops). Chunks with non-finite actions are rejected before they reach the schedule.
Faults latch until `reset()`; while latched, every command is a hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivers.types import ArmState, BaseVelocity, Command
from safety.config import SafetyConfig


@dataclass
class SafetyCounters:
    clamped: int = 0  # ticks whose command was changed to fit the envelope
    rejected: int = 0  # commands or chunks refused outright (non-finite)
    faults: int = 0  # faults latched
    safe_stops: int = 0  # safe-stop sequences run

    def as_dict(self) -> dict[str, int]:
        return {
            "clamped": self.clamped,
            "rejected": self.rejected,
            "faults": self.faults,
            "safe_stops": self.safe_stops,
        }


@dataclass(frozen=True)
class Fault:
    name: str
    detail: str
    t_ns: int


@dataclass
class SafetyLayer:
    config: SafetyConfig
    joint_names: tuple[str, ...]
    counters: SafetyCounters = field(default_factory=SafetyCounters)
    faults: list[Fault] = field(default_factory=list)
    _previous: Command | None = None

    def __post_init__(self) -> None:
        limits = [self.config.joints.get(n) for n in self.joint_names]
        missing = [n for n, lim in zip(self.joint_names, limits) if lim is None]
        if missing:
            raise ValueError(f"safety.joints has no limits for {', '.join(missing)}")
        self._lo = np.array([lim.min for lim in limits])
        self._hi = np.array([lim.max for lim in limits])
        self._vmax = np.array([lim.max_velocity for lim in limits])

    @property
    def faulted(self) -> bool:
        return bool(self.faults)

    def report_fault(self, name: str, detail: str, t_ns: int) -> None:
        if not any(f.name == name for f in self.faults):
            self.faults.append(Fault(name, detail, t_ns))
            self.counters.faults += 1

    def reset(self) -> None:
        self.faults.clear()

    def accept_chunk(self, actions: np.ndarray) -> bool:
        if not np.all(np.isfinite(actions)):
            self.counters.rejected += 1
            return False
        return True

    def hold(self, arm: ArmState | None, t_ns: int) -> Command:
        """Keep the arm at the last commanded (else measured) position and stop the base."""
        if self._previous is not None:
            positions = self._previous.arm_positions
        elif arm is not None:
            positions = arm.positions
        else:
            positions = np.zeros(len(self.joint_names))
        return Command(t_ns, self.joint_names, positions.copy(), BaseVelocity(), hold=True)

    def filter(self, desired: Command, arm: ArmState | None, dt_s: float) -> Command:
        if self.faulted:
            cmd = self.hold(arm, desired.t_ns)
        elif not (
            np.all(np.isfinite(desired.arm_positions)) and np.all(np.isfinite(desired.base.as_array()))
        ):
            self.counters.rejected += 1
            cmd = self.hold(arm, desired.t_ns)
        else:
            cmd = self._clamp(desired, arm, dt_s)
        self._previous = cmd
        return cmd

    def _clamp(self, desired: Command, arm: ArmState | None, dt_s: float) -> Command:
        target = np.clip(desired.arm_positions, self._lo, self._hi)
        reference = (
            self._previous.arm_positions if self._previous is not None else (arm.positions if arm else target)
        )
        step = self._vmax * dt_s
        target = np.clip(target, reference - step, reference + step)
        b = self.config.base
        base = BaseVelocity(
            float(np.clip(desired.base.vx, b.min_vx, b.max_vx)),
            float(np.clip(desired.base.vy, -b.max_vy, b.max_vy)),
            float(np.clip(desired.base.wz, -b.max_wz, b.max_wz)),
        )
        if not (np.array_equal(target, desired.arm_positions) and base == desired.base):
            self.counters.clamped += 1
        return Command(desired.t_ns, self.joint_names, target, base, hold=desired.hold)
