"""The safety layer the runtime calls: one facade over the limits, the monitors and the fault latch.

Each fast-loop tick: `observe()` (monitors; faults latch), `filter()` (the envelope of `limits.py`: every
command sent passes it, holds included). Chunks with non-finite actions are rejected; a few in a row latch a
fault. While a fault is latched, or a hold condition lasts (stale camera frames, by default), every command
is a hold: the arm goes (rate-limited) to the pose it had when the hold began, the gripper keeps its grip at
the capped torque, the base gets zero velocity; after a fault the runtime also stops the base once
(`take_stop_request()`). Faults stay latched until an operator calls `reset()`; hold conditions clear by
themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from anchorvla.errors import DeviceError
from drivers.types import ArmState, BaseState, BaseVelocity, Command, Frame
from safety.config import SafetyConfig
from safety.limits import BASE_NONFINITE, NONFINITE, Limits, Previous, cap_residual, limit_command
from safety.monitor import FAULT, HOLD, WARN, Finding, Monitor

log = logging.getLogger("anchorvla.safety")


@dataclass
class SafetyCounters:
    clamped: int = 0  # ticks whose command was changed to fit the envelope
    rejected: int = 0  # commands or chunks refused outright (non-finite)
    faults: int = 0  # faults latched
    safe_stops: int = 0  # safe-stop sequences run
    warnings: int = 0  # distinct warnings raised (each name counted once until reset)
    holds: int = 0  # hold conditions begun (they end by themselves, e.g. a camera stall)

    def as_dict(self) -> dict[str, int]:
        return {
            "clamped": self.clamped,
            "rejected": self.rejected,
            "faults": self.faults,
            "safe_stops": self.safe_stops,
            "warnings": self.warnings,
            "holds": self.holds,
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
    period_s: float = 1.0 / 15.0  # control period: the monitors' tick
    execute_horizon: int = 5  # actions served per chunk: how long a chunk lasts
    counters: SafetyCounters = field(default_factory=SafetyCounters)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.limits = Limits.from_config(self.config, self.joint_names)
        self.monitor = Monitor(self.config, self.joint_names, self.execute_horizon * self.period_s)
        self._previous: Previous | None = None
        self._measured: np.ndarray | None = None  # the newest finite measured positions
        self._loads: np.ndarray | None = None
        self._hold_pose: np.ndarray | None = None
        self._gripper_closed = False  # the last gripper decision (a hold keeps it: the grip stays capped)
        self._stop_requested = False
        self._warnings: set[str] = set()
        self.last_reasons: tuple[str, ...] = ()
        self._residual_caps: dict[tuple[str, ...], np.ndarray] = {}
        self._nonfinite_run = 0  # non-finite chunks in a row
        self.conditions: dict[str, Fault] = {}  # hold conditions active now, by name (since when)

    # --- faults ------------------------------------------------------------------------------------
    @property
    def faulted(self) -> bool:
        return bool(self.faults)

    def report_fault(self, name: str, detail: str, t_ns: int) -> None:
        if any(f.name == name for f in self.faults):
            return
        if not self.faults:
            self._stop_requested = True
        self.faults.append(Fault(name, detail, t_ns))
        self.counters.faults += 1
        log.error("safety fault %s: %s (latched until reset)", name, detail)

    def take_stop_request(self) -> bool:
        """True once after the first fault latches: the runtime then runs its fault reaction (base stop)."""
        requested, self._stop_requested = self._stop_requested, False
        return requested

    def reset(self) -> None:
        """Operator reset: clear latched faults; the arm goes on from where it holds."""
        self.faults.clear()
        self._stop_requested = False
        self._warnings.clear()
        self.monitor.reset()

    def _found(self, findings: list[Finding], t_ns: int) -> None:
        for f in findings:
            if f.level == FAULT:
                self.report_fault(f.name, f.detail, t_ns)
            elif f.name not in self._warnings:
                self._warnings.add(f.name)
                self.counters.warnings += 1
                log.warning("safety warning %s: %s", f.name, f.detail)

    # --- monitors ----------------------------------------------------------------------------------
    def observe(
        self,
        now_ns: int,
        arm: ArmState | None,
        base: BaseState | None = None,
        frames: dict[str, Frame] | None = None,
        cameras: tuple[str, ...] = (),
    ) -> None:
        """Run the health and staleness monitors on what the tick at `now_ns` read. `cameras`: every configured
        camera's name (one missing from `frames` is stale)."""
        if arm is not None:
            self._remember(arm)
        goal = self._previous.arm if self._previous is not None else None
        findings = self.monitor.check(now_ns, arm, base, frames or {}, goal, cameras)
        self._update_conditions([f for f in findings if f.level == HOLD], now_ns)
        self._found([f for f in findings if f.level != HOLD], now_ns)

    def _update_conditions(self, findings: list[Finding], t_ns: int) -> None:
        """Hold conditions (e.g. stale frames) hold the robot while they last and clear by themselves."""
        now = {f.name: f for f in findings}
        for name in list(self.conditions):
            if name not in now:
                log.info("safety hold %s cleared", name)
                del self.conditions[name]
        for name, f in now.items():
            if name not in self.conditions:
                self.conditions[name] = Fault(name, f.detail, t_ns)
                self.counters.holds += 1
                log.warning("safety hold %s: %s (resumes when it clears)", name, f.detail)

    def comms_failed(self, device: str, detail: str, t_ns: int, link_lost: bool = False) -> None:
        """A read or write of `device` ("arm", "base") raised: faults after a few in a row, or at once when its
        link is gone (`link_lost`)."""
        self._found([self.monitor.comms_failed(device, detail, link_lost)], t_ns)

    def inference_started(self, t_ns: int) -> None:
        self.monitor.inference_started(t_ns)

    def inference_finished(self) -> None:
        self.monitor.inference_finished()

    def chunk_fresh(self, t_obs_ns: int, now_ns: int) -> bool:
        """Whether an action planned from the observation at `t_obs_ns` may still run at `now_ns`."""
        return (now_ns - t_obs_ns) / 1e9 <= self.config.staleness.chunk_s

    def accept_chunk(self, actions: np.ndarray, t_ns: int | None = None) -> bool:
        """A chunk with any non-finite action is refused (never executed); `nonfinite_chunks` refused in a row
        latch `policy_nonfinite` (one bad chunk is skipped, a policy that keeps failing is stopped)."""
        if np.isfinite(actions).all():
            self._nonfinite_run = 0
            return True
        self.counters.rejected += 1
        self._nonfinite_run += 1
        bad = int(np.count_nonzero(~np.isfinite(actions)))
        level = FAULT if self._nonfinite_run >= self.config.nonfinite_chunks else WARN
        detail = f"the policy returned a chunk with {bad} non-finite values ({self._nonfinite_run} in a row)"
        self._found([Finding("policy_nonfinite", level, detail)], t_ns or 0)
        return False

    def cap_residual(self, correction: np.ndarray, channels: tuple[str, ...]) -> np.ndarray:
        """The residual correction (layout `channels`) within the configured caps; non-finite -> 0."""
        caps = self._residual_caps.get(channels)
        if caps is None:
            r = self.config.residual
            per = {"base.vx": r.max_base_linear, "base.vy": r.max_base_linear, "base.wz": r.max_base_angular}
            caps = np.array([per.get(c, r.max_arm) for c in channels])
            self._residual_caps[channels] = caps
        capped, changed = cap_residual(correction, caps)
        if changed:
            self.counters.clamped += 1
        return capped

    # --- commands ----------------------------------------------------------------------------------
    def _remember(self, arm: ArmState) -> None:
        if np.isfinite(arm.positions).all():
            self._measured = arm.positions
        self._loads = arm.loads

    def seed(self, arm: ArmState) -> None:
        """Start from the measured pose (clipped into the soft limits), at rest. Call before the first tick.

        Refuses a pose no goal may start from (a non-finite position, or one beyond a hard limit by more than
        `health.out_of_range_tolerance`): commanding such an arm would make it jump."""
        problem = self.monitor.out_of_range(arm.positions)
        if problem is not None:
            raise DeviceError(f"{problem}; not starting: check the arm calibration")
        self._remember(arm)
        pose = np.clip(arm.positions, self.limits.soft_lo, self.limits.soft_hi)
        self._previous = Previous(pose, np.zeros_like(pose), np.zeros(3))

    def continue_from(self, previous: Command) -> None:
        """Start the rate limits from a command sent before (episode replay), as if it was sent at rest."""
        self._previous = Previous(
            np.asarray(previous.arm_positions, dtype=np.float64).copy(),
            np.zeros(len(self.joint_names)),
            previous.base.as_array(),
        )

    @property
    def previous_goal(self) -> np.ndarray | None:
        return None if self._previous is None else self._previous.arm.copy()

    def hold(self, arm: ArmState | None, t_ns: int) -> Command:
        """The desired hold command: the arm at the pose it had when the hold began, the base stopped.

        Like any desired command it must still pass `filter()` before it is sent."""
        if arm is not None:
            self._remember(arm)
        return Command(t_ns, self.joint_names, self._hold_target(), BaseVelocity(), hold=True)

    def _hold_target(self) -> np.ndarray:
        if self._hold_pose is None:
            prev = self._require_previous()
            pose = prev.arm.copy() if self._measured is None else self._measured.copy()
            g = self.limits.gripper
            if g >= 0:
                pose[g] = prev.arm[g]  # keep the grip; the limiter caps its torque
            self._hold_pose = np.clip(pose, self.limits.soft_lo, self.limits.soft_hi)
        return self._hold_pose

    def _require_previous(self) -> Previous:
        if self._previous is None:
            raise RuntimeError(
                "SafetyLayer has no starting pose: call seed() with the measured arm state first"
            )
        return self._previous

    def filter(self, desired: Command, arm: ArmState | None, dt_s: float) -> Command:
        """The command to send for `desired`: inside every limit, a hold while a fault is latched."""
        if arm is not None:
            self._remember(arm)
        if self._previous is None and arm is not None:
            self.seed(arm)
        previous = self._require_previous()
        hold = desired.hold or self.faulted or bool(self.conditions)
        if hold:
            target, base = self._hold_target(), np.zeros(3)
        else:
            self._hold_pose = None
            target, base = desired.arm_positions, desired.base.as_array()
            self._gripper_closed = desired.gripper_closed
        measured = arm.positions if arm is not None else None
        out = limit_command(
            target, base, measured, self._loads, previous, dt_s, self.limits, self._gripper_closed
        )
        self._previous = out.as_previous(previous, dt_s)
        self.last_reasons = out.reasons
        if not hold and out.reasons:
            self.counters.clamped += 1
            if NONFINITE in out.reasons or BASE_NONFINITE in out.reasons:
                self.counters.rejected += 1
        return Command(
            desired.t_ns, self.joint_names, out.arm, BaseVelocity(*map(float, out.base)), hold=hold,
            gripper_closed=self._gripper_closed,
        )  # fmt: skip

    def park(self, rest_pose: np.ndarray, arm: ArmState | None, dt_s: float, speed: float) -> Command:
        """One step toward `rest_pose` at `speed` rad/s, through the envelope, latched fault or not (parking is
        the operator's chosen way out). The base is stopped."""
        if arm is not None:
            self._remember(arm)
        previous = self._require_previous()
        step = np.clip(rest_pose - previous.arm, -speed * dt_s, speed * dt_s)
        measured = arm.positions if arm is not None else None
        out = limit_command(
            previous.arm + step, np.zeros(3), measured, self._loads, previous, dt_s, self.limits
        )
        self._previous = out.as_previous(previous, dt_s)
        self._hold_pose = None
        return Command(arm.t_ns if arm else 0, self.joint_names, out.arm, BaseVelocity(), hold=True)
