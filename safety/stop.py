"""Stop sequences: safe stop, e-stop, park-and-release.

Each is a list of device calls run one after the other, each in a worker thread with a timeout, so a device
that stopped answering (a call that raises or never returns) costs at most one timeout and the next step
still runs. Every arm goal a sequence writes comes out of the safety layer (`filter`/`park`): nothing here
bypasses the envelope.

- safe stop: base Move(0, 0, 0), then StopMove (it stays standing); the arm holds its measured pose; the
  gripper keeps its grip at the capped torque.
- e-stop: latch the `operator_estop` fault (unless it reacts to a fault); base StopMove or Damp (configurable; Damp lets the body sag); arm holds.
  Its first moment (`hold_now`) runs on the caller's thread at once: the arm's hold goal and base Move 0.
- park-and-release: the arm moves slowly to the rest pose, then torque is released. If the arm stops
  answering or does not reach the pose in time, torque stays on and the arm holds (releasing it elsewhere
  would drop it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anchorvla.errors import UserError
from drivers.protocols import Arm, Base, Damping, TorqueRelease
from safety.config import StopConfig
from safety.envelope import SafetyLayer

log = logging.getLogger("anchorvla.safety")


@dataclass(frozen=True)
class StepResult:
    name: str
    ok: bool
    elapsed_ms: float
    detail: str = ""


@dataclass(frozen=True)
class StopReport:
    sequence: str
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def describe(self) -> str:
        return f"{self.sequence}: " + ", ".join(
            f"{s.name} {'ok' if s.ok else 'FAILED (' + s.detail + ')'}" for s in self.steps
        )


def call_now(name: str, call: Callable[[], object]) -> StepResult:
    """Run one device call on this thread; a failure is reported, never raised."""
    t0 = time.monotonic()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - any failure of the call is reported, never raised
        log.warning("stop step %s failed: %s", name, exc)
        return StepResult(name, False, (time.monotonic() - t0) * 1e3, str(exc))
    return StepResult(name, True, (time.monotonic() - t0) * 1e3)


def run_step(name: str, call: Callable[[], object], timeout_s: float) -> StepResult:
    """Run one device call in a daemon thread; give up waiting after `timeout_s` (the call may go on)."""
    outcome: list[StepResult] = []
    t0 = time.monotonic()
    worker = threading.Thread(
        target=lambda: outcome.append(call_now(name, call)), name=f"stop-{name}", daemon=True
    )
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        log.warning("stop step %s: no answer within %.0f ms", name, timeout_s * 1e3)
        return StepResult(
            name, False, (time.monotonic() - t0) * 1e3, f"timed out after {timeout_s * 1e3:.0f} ms"
        )
    return outcome[0]


class StopSequences:
    """The stop sequences for one set of devices and one safety layer."""

    def __init__(self, config: StopConfig, arm: Arm, base: Base | None, safety: SafetyLayer, period_s: float):
        self.config, self.arm, self.base, self.safety, self.period_s = config, arm, base, safety, period_s
        if base is not None and config.estop_base == "damp" and not isinstance(base, Damping):
            raise UserError(
                f"safety.stop.estop_base is 'damp' but the base driver {type(base).__name__} has no damp(); use 'stop_move'"
            )
        self._release_torque = arm.release_torque if isinstance(arm, TorqueRelease) else None
        if config.on_exit == "park_release" and self._release_torque is None:
            raise UserError(
                f"safety.stop.on_exit is 'park_release' but the arm driver {type(arm).__name__} cannot release torque; use 'safe_stop'"
            )
        unknown = sorted(set(config.rest_pose) - set(safety.joint_names))
        if unknown:
            raise UserError(
                f"safety.stop.rest_pose names unknown joints {unknown} (joints: {', '.join(safety.joint_names)})"
            )
        self.rest_pose = np.array([config.rest_pose.get(j, 0.0) for j in safety.joint_names])
        self.reports: list[StopReport] = []
        self._reaction: threading.Thread | None = None

    def _hold_goal(self) -> np.ndarray:
        """The arm's hold goal for now, through the envelope (one tick's step toward the hold pose)."""
        return self.safety.filter(
            self.safety.hold(None, time.monotonic_ns()), None, self.period_s
        ).arm_positions

    def _arm_hold(self) -> StepResult:
        goal = self._hold_goal()
        return run_step("arm_hold", lambda: self.arm.write_goal(goal), self.config.step_timeout_s)

    def hold_now(self) -> StopReport:
        """The e-stop's first moment, on the caller's thread without waiting for the next tick: the arm's hold goal
        and base Move 0. Call it where the fast loop writes (the event-loop thread, between ticks or inside one: one
        writer per bus). Each is the one call a tick makes (a goal is one SYNC_WRITE, a Move has no reply), so it
        returns as fast as a tick's; a failure is logged and the next tick tries again. Only after a fault latched
        (every later command is a hold)."""
        if not self.safety.faulted:
            raise RuntimeError("hold_now() without a latched fault: the next tick would move on")
        steps = [call_now("arm_hold", lambda: self.arm.write_goal(self._hold_goal()))]
        if self.base is not None:
            steps.append(call_now("base_move_zero", lambda: self.base.move(0.0, 0.0, 0.0)))
        return self._finish("hold_now", steps)

    def _finish(self, name: str, steps: list[StepResult]) -> StopReport:
        report = StopReport(name, tuple(steps))
        self.reports.append(report)
        (log.info if report.ok else log.warning)("%s", report.describe())
        return report

    def safe_stop(self, hold_arm: bool = True) -> StopReport:
        """`hold_arm=False` while the fast loop runs: it writes the hold itself, and one writer per bus."""
        self.safety.counters.safe_stops += 1
        steps = []
        if self.base is not None:
            base = self.base
            steps.append(
                run_step("base_move_zero", lambda: base.move(0.0, 0.0, 0.0), self.config.step_timeout_s)
            )
            steps.append(run_step("base_stop_move", base.stop_move, self.config.step_timeout_s))
        if hold_arm:
            steps.append(self._arm_hold())
        return self._finish("safe_stop", steps)

    def estop(
        self, reason: str = "operator", hold_arm: bool = True, latch: str | None = "operator_estop"
    ) -> StopReport:
        """Latch `latch` (None: a fault is latched already), then base StopMove or Damp, and the arm hold."""
        if latch is not None:
            self.safety.report_fault(latch, reason, time.monotonic_ns())
            self.safety.take_stop_request()  # this is the reaction
        self.safety.counters.safe_stops += 1
        steps = []
        if self.base is not None:
            if self.config.estop_base == "damp":
                steps.append(run_step("base_damp", self.base.damp, self.config.step_timeout_s))
            else:
                steps.append(run_step("base_stop_move", self.base.stop_move, self.config.step_timeout_s))
        if hold_arm:
            steps.append(self._arm_hold())
        return self._finish("estop", steps)

    def fault_reaction(self) -> StopReport:
        """What the fast loop runs once when a fault latches: the base part of the configured sequence (the
        fast loop itself holds the arm, every tick, while the fault is latched)."""
        if self.config.fault_reaction == "estop":
            return self.estop("fault", hold_arm=False, latch=None)
        return self.safe_stop(hold_arm=False)

    def start_fault_reaction(self) -> threading.Thread:
        """Run `fault_reaction` in a thread, so a base that stopped answering never delays the fast loop's
        ticks (which keep holding the arm meanwhile)."""
        self._reaction = threading.Thread(target=self.fault_reaction, name="fault-reaction", daemon=True)
        self._reaction.start()
        return self._reaction

    def _wait_for_reaction(self) -> None:
        if self._reaction is not None:
            self._reaction.join(3 * self.config.step_timeout_s)

    def park_and_release(self) -> StopReport:
        """Base stopped, arm to the rest pose at the park speed, then torque off (only once there)."""
        self.safety.counters.safe_stops += 1
        c = self.config
        steps = []
        if self.base is not None:
            steps.append(run_step("base_move_zero", lambda: self.base.move(0.0, 0.0, 0.0), c.step_timeout_s))
            steps.append(run_step("base_stop_move", self.base.stop_move, c.step_timeout_s))
        t0 = time.monotonic()
        deadline = t0 + c.park_timeout_s
        parked, detail = False, "timed out before reaching the rest pose"
        while time.monotonic() < deadline:
            state: dict = {}
            read = run_step(
                "arm_read", lambda state=state: state.update(arm=self.arm.read_state()), c.step_timeout_s
            )
            if not read.ok:
                detail = f"arm stopped answering while parking ({read.detail})"
                break
            arm = state["arm"]
            if np.all(np.abs(arm.positions - self.rest_pose) <= c.park_tolerance):
                parked = True
                break
            cmd = self.safety.park(self.rest_pose, arm, self.period_s, c.park_speed)
            wrote = run_step(
                "arm_park_goal", lambda cmd=cmd: self.arm.write_goal(cmd.arm_positions), c.step_timeout_s
            )
            if not wrote.ok:
                detail = f"arm stopped answering while parking ({wrote.detail})"
                break
            time.sleep(self.period_s)
        elapsed = (time.monotonic() - t0) * 1e3
        if parked:
            steps.append(StepResult("arm_park", True, elapsed))
            steps.append(run_step("arm_release_torque", self._release_torque, c.step_timeout_s))
        else:
            steps.append(StepResult("arm_park", False, elapsed, detail + "; torque left on, holding"))
            steps.append(self._arm_hold())
        return self._finish("park_and_release", steps)

    def on_exit(self) -> StopReport:
        self._wait_for_reaction()  # one sequence at a time on the base
        return self.park_and_release() if self.config.on_exit == "park_release" else self.safe_stop()
