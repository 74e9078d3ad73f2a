"""Health and staleness monitors: what they see each tick becomes warnings or faults.

Servo health (temperature, voltage, load, status error bits, stalled joints), staleness of the arm state,
base state and camera frames, comms loss (consecutive failed or stale reads), inference overrun (an inference
still running after the executed part of a chunk has run out). The monitor only reports; the safety layer
latches the faults and the runtime reacts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivers.types import ArmState, BaseState, Frame
from safety.config import SafetyConfig

WARN = "warn"
HOLD = "hold"  # hold while it lasts, resume by itself when it clears
FAULT = "fault"  # latch until an operator resets

# Feetech status byte (FACTS.md).
ERROR_BITS = {1: "voltage", 2: "angle", 4: "overheat", 8: "over-current", 32: "overload"}


@dataclass(frozen=True)
class Finding:
    name: str  # e.g. servo_overheat; one latched fault per name
    level: str  # WARN, HOLD or FAULT
    detail: str


def describe_bits(bits: int) -> str:
    return "+".join(label for bit, label in ERROR_BITS.items() if bits & bit) or f"0x{bits:02x}"


class Monitor:
    """Per-tick checks with the few counters they need (consecutive ticks of overload, stall, comms loss)."""

    def __init__(self, config: SafetyConfig, joint_names: tuple[str, ...], chunk_budget_s: float):
        self.h = config.health
        self.s = config.staleness
        self.joint_names = joint_names
        n = len(joint_names)
        self.gripper = joint_names.index(config.gripper.joint) if config.gripper.joint in joint_names else -1
        tol = self.h.out_of_range_tolerance
        self._lo = np.array([config.joints[j].min for j in joint_names]) - tol
        self._hi = np.array([config.joints[j].max for j in joint_names]) + tol
        self._overload = np.zeros(n, dtype=np.int64)
        self._stall = np.zeros(n, dtype=np.int64)
        self._misses = {"arm": 0, "base": 0}
        budget_s = max(self.s.inference_overrun_factor * chunk_budget_s, self.s.inference_overrun_min_s)
        self._inference_budget_ns = int(budget_s * 1e9)
        self._inference_started_ns: int | None = None

    def reset(self) -> None:
        """Forget the consecutive-tick counts (operator reset); an inference in flight stays tracked."""
        self._overload[:] = 0
        self._stall[:] = 0
        self._misses = {"arm": 0, "base": 0}

    # --- comms -------------------------------------------------------------------------------------
    def comms_failed(self, device: str, detail: str, link_lost: bool = False) -> Finding:
        """A read or write of `device` failed: a warning, or a fault after `comms_loss_ticks` in a row; a link
        that is gone (`link_lost`: the adapter unplugged) is a fault at once, as no retry can bring it back."""
        self._misses[device] = self._misses.get(device, 0) + 1
        if link_lost:
            return Finding(f"{device}_comms", FAULT, f"{device} link lost: {detail}")
        limit = self.s.base_comms_loss_ticks if device == "base" else self.s.comms_loss_ticks
        level = FAULT if self._misses[device] >= limit else WARN
        return Finding(
            f"{device}_comms", level, f"{device} not answering ({self._misses[device]} in a row): {detail}"
        )

    def _fresh(self, device: str, state_t_ns: int, now_ns: int, max_age_s: float) -> Finding | None:
        """A fresh state resets the comms-loss count; one older than `max_age_s` is comms loss at once (its age
        already spans several ticks)."""
        age_s = (now_ns - state_t_ns) / 1e9
        if age_s <= max_age_s:
            self._misses[device] = 0
            return None
        return Finding(
            f"{device}_comms",
            FAULT,
            f"{device} state is {age_s * 1e3:.0f} ms old (limit {max_age_s * 1e3:.0f} ms)",
        )

    # --- inference ---------------------------------------------------------------------------------
    @property
    def inference_budget_s(self) -> float:
        """How long an inference may run before it is an overrun."""
        return self._inference_budget_ns / 1e9

    def inference_started(self, t_ns: int) -> None:
        self._inference_started_ns = t_ns

    def inference_finished(self) -> None:
        self._inference_started_ns = None

    def _inference(self, now_ns: int) -> Finding | None:
        started = self._inference_started_ns
        if started is None or now_ns - started <= self._inference_budget_ns:
            return None
        return Finding(
            "inference_overrun",
            FAULT,
            f"inference running for {(now_ns - started) / 1e6:.0f} ms, longer than the "
            f"{self._inference_budget_ns / 1e6:.0f} ms budget (the executed part of a chunk)",
        )

    # --- servo health ------------------------------------------------------------------------------
    def _worst(self, values: np.ndarray, fmt: str, pick) -> str:
        i = int(pick(values))
        return f"{self.joint_names[i]} {fmt.format(values[i])}"

    def out_of_range(self, positions: np.ndarray) -> str | None:
        """What is wrong with a measured pose no arm can be in (non-finite, beyond a hard limit), or None."""
        bad = ~np.isfinite(positions) | (positions < self._lo) | (positions > self._hi)
        if not bad.any():
            return None
        i = int(np.flatnonzero(bad)[0])
        return (
            f"{self.joint_names[i]} measured at {positions[i]:.3f} rad, outside its limits "
            f"{self._lo[i]:.3f}..{self._hi[i]:.3f} (calibration lost or not applied?)"
        )

    def _health(self, arm: ArmState, goal: np.ndarray | None) -> list[Finding]:
        h, out = self.h, []
        if arm.temperatures_c is not None:
            t = arm.temperatures_c
            if t.max() >= h.fault_temperature_c:
                out.append(
                    Finding(
                        "servo_overheat",
                        FAULT,
                        self._worst(t, "{:.0f} C", np.argmax) + f" >= {h.fault_temperature_c:.0f} C",
                    )
                )
            elif t.max() >= h.warn_temperature_c:
                out.append(Finding("servo_warm", WARN, self._worst(t, "{:.0f} C", np.argmax)))
        if arm.voltages_v is not None:
            v = arm.voltages_v
            if v.min() < h.fault_min_voltage_v or v.max() > h.fault_max_voltage_v:
                bad = int(np.argmin(v)) if v.min() < h.fault_min_voltage_v else int(np.argmax(v))
                out.append(
                    Finding(
                        "servo_voltage",
                        FAULT,
                        f"{self.joint_names[bad]} at {v[bad]:.1f} V (allowed {h.fault_min_voltage_v}..{h.fault_max_voltage_v} V)",
                    )
                )
            elif v.min() < h.warn_min_voltage_v:
                out.append(Finding("servo_voltage_low", WARN, self._worst(v, "{:.1f} V", np.argmin)))
        if arm.loads is not None:
            load = np.abs(arm.loads)
            over = load >= h.fault_load
            self._overload = np.where(over, self._overload + 1, 0)
            if self._overload.max() >= h.overload_ticks:
                out.append(
                    Finding(
                        "servo_overload",
                        FAULT,
                        self._worst(load, "load {:.0%}", np.argmax) + f" for {h.overload_ticks} ticks",
                    )
                )
            elif load.max() >= h.warn_load:
                out.append(Finding("servo_load_high", WARN, self._worst(load, "load {:.0%}", np.argmax)))
        if arm.error_bits is not None:
            bits = np.asarray(arm.error_bits, dtype=np.int64)
            bad = np.flatnonzero(bits & h.fault_error_bits)
            if bad.size:
                i = int(bad[0])
                out.append(
                    Finding(
                        "servo_error", FAULT, f"{self.joint_names[i]} reports {describe_bits(int(bits[i]))}"
                    )
                )
            elif bits.any():
                i = int(np.flatnonzero(bits)[0])
                out.append(
                    Finding(
                        "servo_status", WARN, f"{self.joint_names[i]} reports {describe_bits(int(bits[i]))}"
                    )
                )
        problem = self.out_of_range(arm.positions)
        if problem is not None:
            out.append(Finding("joint_out_of_range", FAULT, problem))
        if goal is not None:
            out.extend(self._stalled(arm, goal))
        return out

    def _stalled(self, arm: ArmState, goal: np.ndarray) -> list[Finding]:
        """A joint far from its goal that does not move (the gripper holding something is not a stall)."""
        error = np.abs(goal - arm.positions)
        still = np.abs(arm.velocities) < self.h.stall_speed
        stalled = (error > self.h.stall_error) & still
        if self.gripper >= 0:
            stalled[self.gripper] = False
        self._stall = np.where(stalled, self._stall + 1, 0)
        if self._stall.max() >= self.h.stall_ticks:
            i = int(np.argmax(self._stall))
            return [
                Finding(
                    "joint_stalled",
                    FAULT,
                    f"{self.joint_names[i]} {error[i]:.3f} rad from its goal and not moving",
                )
            ]
        return []

    # --- the per-tick entry point ------------------------------------------------------------------
    def check(
        self,
        now_ns: int,
        arm: ArmState | None,
        base: BaseState | None,
        frames: dict[str, Frame],
        goal: np.ndarray | None,
        cameras: tuple[str, ...] = (),
    ) -> list[Finding]:
        """Everything seen at the tick `now_ns`. A missing arm/base state (failed read) is reported by the
        caller through `comms_failed`; here only present states are checked. `cameras`: the names of every
        configured camera; one without a frame in `frames` (unplugged, its driver failing) is stale."""
        out: list[Finding] = []
        if arm is not None:
            stale = self._fresh("arm", arm.t_ns, now_ns, self.s.arm_state_s)
            if stale is not None:
                out.append(stale)
            else:
                out.extend(self._health(arm, goal))
        if base is not None:
            stale = self._fresh("base", base.t_ns, now_ns, self.s.base_state_s)
            if stale is not None:
                out.append(stale)
            elif base.error_code:
                out.append(Finding("base_error", WARN, f"base reports error code {base.error_code}"))
        camera_level = HOLD if self.s.frame_reaction == "hold" else FAULT
        for name, frame in frames.items():
            age_s = (now_ns - frame.t_ns) / 1e9
            if age_s > self.s.frame_s:
                out.append(
                    Finding(
                        "camera_stale",
                        camera_level,
                        f"camera {name}: newest frame is {age_s * 1e3:.0f} ms old (limit {self.s.frame_s * 1e3:.0f} ms)",
                    )
                )
        missing = [name for name in cameras if name not in frames]
        if missing:
            out.append(
                Finding(
                    "camera_stale",
                    camera_level,
                    f"camera {', '.join(missing)}: no frame (unplugged, or its driver failing)",
                )
            )
        overrun = self._inference(now_ns)
        if overrun is not None:
            out.append(overrun)
        return out
