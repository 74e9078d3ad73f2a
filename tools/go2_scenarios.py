"""Scenarios of the Go2 client against an emulated Go2 in another process, on loopback. The benchmark
(`anchorvla bench go2`) prints their figures; the tests check their outcomes.

Every scenario takes a running `Go2EmulatorProcess` and a domain id; the client is a real `Go2Base`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from anchorvla.errors import DeviceError
from drivers.emulated.go2_process import Go2EmulatorProcess
from drivers.unitree import sport_api as api
from drivers.unitree.go2 import Go2Base
from onboard.runtime import run_event_loop
from onboard.timing import wait_until


def integrate_twists(twists: list[tuple[float, float, float, float]], t_end: float, step_s: float = 1e-3):
    """Pose (x, y, yaw) from body-frame twists (t_start_s, vx, vy, wz), each held until the next one (the
    last until `t_end`), from the origin. The reference the emulator's pose is compared against."""
    x = y = yaw = 0.0
    bounds = [t for t, *_ in twists[1:]] + [t_end]
    for (t0, vx, vy, wz), t1 in zip(twists, bounds, strict=True):
        n = max(1, math.ceil((t1 - t0) / step_s))
        dt = (t1 - t0) / n
        for _ in range(n):
            mid = yaw + 0.5 * wz * dt
            x += (math.cos(mid) * vx - math.sin(mid) * vy) * dt
            y += (math.sin(mid) * vx + math.cos(mid) * vy) * dt
            yaw += wz * dt
    return x, y, yaw


@dataclass
class TickLog:
    tick_ns: list[int] = field(default_factory=list)
    move_ids: list[int] = field(default_factory=list)
    move_call_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)  # loop wake-up after the tick deadline
    read_call_ms: list[float] = field(default_factory=list)
    read_errors: list[int] = field(default_factory=list)  # tick index of each read_state DeviceError
    twists: list[tuple[float, float, float]] = field(default_factory=list)


async def _fast_loop(base: Go2Base, rate_hz: float, seconds: float, twist_at, log: TickLog):
    """The fast loop's Go2 calls at absolute deadlines, as onboard.loops.FastLoop makes them.
    `twist_at(t_s)` is the (vx, vy, wz) commanded `t_s` after the first tick."""
    period = round(1e9 / rate_hz)
    first = deadline = time.monotonic_ns() + period
    for i in range(round(seconds * rate_hz)):
        await wait_until(deadline, 2_000_000)
        t0 = time.monotonic_ns()
        try:
            base.read_state()
        except DeviceError:
            log.read_errors.append(i)
        t1 = time.monotonic_ns()
        twist = twist_at((deadline - first) / 1e9)
        log.move_ids.append(base.client.move(*twist))
        t2 = time.monotonic_ns()
        log.tick_ns.append(deadline)
        log.twists.append(twist)
        log.read_call_ms.append((t1 - t0) / 1e6)
        log.lateness_ms.append((t0 - deadline) / 1e6)
        log.move_call_ms.append((t2 - t1) / 1e6)
        deadline += period


def run_ticks(base: Go2Base, rate_hz: float, seconds: float, twist_at=lambda t: (0.0, 0.0, 0.0)) -> TickLog:
    log = TickLog()
    run_event_loop(_fast_loop(base, rate_hz, seconds, twist_at, log))
    return log


def trapezoid(twist: tuple[float, float, float], seconds: float, ramp_s: float = 1.0):
    """`twist` scaled by a ramp up over `ramp_s`, a plateau and a ramp down to 0 at `seconds`: a command
    the robot can follow within its acceleration limits."""

    def twist_at(t: float) -> tuple[float, float, float]:
        scale = max(0.0, min(1.0, t / ramp_s, (seconds - t) / ramp_s))
        return tuple(scale * v for v in twist)

    return twist_at


def wire_delays_ms(log: TickLog, received: list[dict]) -> list[float]:
    """For each Move the emulator received: its receipt time minus the tick deadline it was sent for."""
    by_id = {r["request_id"]: r["received_ns"] for r in received}
    return [(by_id[i] - t) / 1e6 for i, t in zip(log.move_ids, log.tick_ns, strict=True) if i in by_id]


def drive_sequence(emu: Go2EmulatorProcess, domain_id: int, seconds: float, rate_hz: float, twist) -> dict:
    """Stand up -> balance stand -> Move at `rate_hz` for `seconds` -> StopMove -> stand down, from a Go2
    that lies down. Returns the modes seen, the pose error against the integrated commands, the timings."""
    base = Go2Base("lo", domain_id)
    try:
        base.connect()
        modes = [base.mode()]
        base.stand_up()
        modes.append(base.mode())
        base.balance_stand()
        modes.append(base.mode())
        log = run_ticks(base, rate_hz, seconds, trapezoid(twist, seconds))
        modes.append(base.mode())
        base.stop_move()
        base.wait_mode((api.MODE_BALANCE_STAND,), 3.0)  # decelerated to a stand
        modes.append(base.mode())
        x, y, yaw = emu.pose()
        base.stand_down()
        modes.append(base.mode())
    finally:
        base.stop()
    received = emu.received()
    sent = dict(zip(log.move_ids, log.twists, strict=True))
    moves = [r for r in received if r["request_id"] in sent and r["code"] == api.OK]
    stop_ns = next(r["received_ns"] for r in received if r["api_id"] == api.STOP_MOVE)
    # The commands as the emulator received them, each held until the next, up to StopMove.
    ref = integrate_twists([(r["received_ns"] / 1e9, *sent[r["request_id"]]) for r in moves], stop_ns / 1e9)
    path = sum(math.hypot(*sent[r["request_id"]][:2]) for r in moves) / rate_hz
    return {
        "modes": modes,
        "moves_sent": len(log.move_ids),
        "moves_accepted": len(moves),
        "pose": [x, y, yaw],
        "reference_pose": list(ref),
        "position_error_fraction": math.hypot(x - ref[0], y - ref[1]) / max(path, 1e-9),
        "yaw_error_fraction": abs(yaw - ref[2]) / max(abs(ref[2]), 1e-9),
        "wire_delay_ms": wire_delays_ms(log, received),
        "move_call_ms": log.move_call_ms,
        "read_call_ms": log.read_call_ms,
        "lateness_ms": log.lateness_ms,
    }


def startup_to_first_move(emu: Go2EmulatorProcess, domain_id: int, rate_hz: float) -> dict:
    """From constructing the client (Go2 standing locked) to the first Move the emulator accepted."""
    t0 = time.monotonic_ns()
    base = Go2Base("lo", domain_id)
    try:
        base.start()
        t_started = time.monotonic_ns()
        log = run_ticks(base, rate_hz, 0.5, lambda t: (0.1, 0.0, 0.0))
        base.stop_move()
    finally:
        base.stop()
    accepted = {
        r["request_id"]: r["received_ns"]
        for r in emu.received()
        if r["api_id"] == api.MOVE and r["code"] == api.OK
    }
    first = next(accepted[i] for i in log.move_ids if i in accepted)
    return {"start_s": (t_started - t0) / 1e9, "first_accepted_move_s": (first - t0) / 1e9}


def fault_silent(emu: Go2EmulatorProcess, domain_id: int, rate_hz: float, rpc_timeout_s: float) -> dict:
    """The emulator stops answering: stop_move() returns within its timeout; move() stays non-blocking."""
    base = Go2Base("lo", domain_id, rpc_timeout_s=rpc_timeout_s)
    try:
        base.start()
        emu.set_faults(silent=True)
        log = run_ticks(base, rate_hz, 1.0, lambda t: (0.1, 0.0, 0.0))
        t0 = time.monotonic()
        try:
            base.stop_move()
            error = ""
        except DeviceError as exc:
            error = str(exc)
        stop_move_s = time.monotonic() - t0
    finally:
        emu.set_faults(silent=False)
        base.stop()
    return {"stop_move_s": stop_move_s, "stop_move_error": error, "move_call_ms": log.move_call_ms}


def fault_no_state(emu: Go2EmulatorProcess, domain_id: int, rate_hz: float, max_state_age_s: float) -> dict:
    """The emulator stops publishing: how many ticks until read_state raises, and the state age then."""
    base = Go2Base("lo", domain_id, max_state_age_s=max_state_age_s)
    try:
        base.start()
        run_ticks(base, rate_hz, 0.5)
        emu.set_faults(no_state=True)
        t_fault = time.monotonic_ns()
        log = run_ticks(base, rate_hz, 1.0)
        age_s = base.state_age_s()
    finally:
        emu.set_faults(no_state=False)
        base.stop()
    first_tick_after = next(i for i, t in enumerate(log.tick_ns) if t >= t_fault)
    detected = log.read_errors[0] if log.read_errors else None
    return {
        "ticks_to_detect": None if detected is None else detected - first_tick_after + 1,
        "state_age_at_end_s": age_s,
        "read_call_ms": log.read_call_ms,
        "errors_after_detection": len(log.read_errors),
    }


def no_robot(domain_id: int, state_timeout_s: float) -> dict:
    """No Go2 on the domain: start() fails with one line after state_timeout_s."""
    base = Go2Base("lo", domain_id, state_timeout_s=state_timeout_s)
    t0 = time.monotonic()
    try:
        base.start()
        message = ""
    except DeviceError as exc:
        message = str(exc)
    finally:
        base.stop()
    return {"message": message, "seconds": time.monotonic() - t0}


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": math.nan, "p99": math.nan, "max": math.nan}
    arr = np.asarray(values)
    return {
        "n": len(arr),
        "p50": float(np.median(arr)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }
