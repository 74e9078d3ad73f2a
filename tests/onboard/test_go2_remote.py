"""The Go2 remote as the operator's e-stop, end to end: the emulated Go2 publishes rt/wirelesscontroller, the real
Go2 client reads it at the start of a tick, and the runtime latches the e-stop (L2+B) or pauses/resumes (L1+A).
Done when: from the message, Move 0 is on the wire and the arm holds within one tick."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from drivers.unitree import sport_api as api
from drivers.unitree.remote import ESTOP, KEY_BITS, PAUSE_RESUME, RemoteDecoder, keys_mask
from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.runtime import Devices, Runtime

REPO = Path(__file__).resolve().parents[2]


class TickLog:
    """Each tick's decision with the monotonic time its listeners ran; `wait_tick()` waits for the next one."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.records: list = []  # (decision, listener time ns)
        self._tick = threading.Event()
        runtime.fast.tick_listeners.append(self)

    def __call__(self, tick_ns: int) -> None:
        self.records.append((self.runtime.fast.last_decision, time.monotonic_ns()))
        self._tick.set()

    def wait_tick(self) -> None:
        self._tick.clear()
        assert self._tick.wait(5), "no tick"

    def first(self, predicate, after_ns: int = 0) -> int:
        return next(i for i, (d, _) in enumerate(self.records) if d.tick_ns >= after_ns and predicate(d))


def runtime_on(domain_id: int, **base) -> Runtime:
    config = load_config(
        REPO / "configs" / "go2-emulated.yaml",
        {"robot": {"base": {"domain_id": domain_id, **base}}, "policy": {"standin": {"compute_ms": 20}}},
    )
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    return Runtime(config, devices, build_engine(config))


def run_with(runtime: Runtime, duration_s: float, client) -> None:
    """Run the runtime in this (main) thread for `duration_s` while `client()` runs in a thread; re-raise its error."""
    errors = []

    def guarded():
        try:
            client()
        except BaseException as exc:  # raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    try:
        asyncio.run(runtime.run(duration_s))
    finally:
        thread.join(timeout=30)
    if errors:
        raise errors[0]


def moves(emulator) -> list[tuple[int, int, dict]]:
    """(request id, received ns, parameters) of every Move the emulated Go2 took, in the order they were sent."""
    return sorted(
        (r.request_id, r.received_ns, json.loads(r.parameter))
        for r in list(emulator.received)
        if r.api_id == api.MOVE
    )


def test_decoder_counts_each_combination_once_per_press():
    assert (KEY_BITS["L2"], KEY_BITS["B"], KEY_BITS["L1"], KEY_BITS["A"]) == (5, 9, 1, 8)
    decoder = RemoteDecoder()
    assert decoder.presses(keys_mask("L2")) == []
    assert decoder.presses(keys_mask("L2", "B")) == [ESTOP]
    assert decoder.presses(keys_mask("L2", "B", "X")) == []  # still held: no repeat
    assert decoder.presses(keys_mask("B")) == []
    assert decoder.presses(keys_mask("L2", "B")) == [ESTOP]  # pressed again
    assert decoder.presses(keys_mask("L1", "A", "L2", "B")) == [PAUSE_RESUME]
    assert RemoteDecoder().presses(keys_mask("L1", "A", "L2", "B")) == [ESTOP, PAUSE_RESUME]


def test_l2_b_sends_move_zero_and_holds_the_arm_within_one_tick():
    runtime = runtime_on(92)
    log = TickLog(runtime)
    emulator = runtime.devices.base.emulator
    sent = {}

    def operator():
        while len(log.records) < 20 or log.records[-1][0].command.base.vx == 0.0:
            log.wait_tick()
        log.wait_tick()  # press just after a tick: the next one is the first that can see it
        sent["t_ns"] = time.monotonic_ns()
        emulator.press("L2", "B")
        time.sleep(0.3)
        emulator.release()
        time.sleep(0.1)
        emulator.press("L1", "A")  # resume is refused while the e-stop is latched
        time.sleep(0.2)
        emulator.release()

    run_with(runtime, 2.5, operator)
    t_msg = sent["t_ns"]
    period = runtime.fast.period_ns
    k_first = log.first(lambda d: True, after_ns=t_msg)  # the first tick that starts after the message
    k_stop = log.first(lambda d: "operator_estop" in d.faults)
    assert k_stop <= k_first, (k_stop, k_first)
    held = log.records[k_stop][0]
    assert held.paused and held.desired.hold and held.command.base.vx == 0.0
    # Move 0 was on the wire before the next tick began, and every Move sent after it is a zero one.
    zero = {"x": 0.0, "y": 0.0, "z": 0.0}
    sent = moves(emulator)
    first_zero = next(i for i, (_, received, m) in enumerate(sent) if m == zero and received > t_msg)
    assert sent[first_zero][1] < held.tick_ns + period
    assert all(m == zero for _, _, m in sent[first_zero:]), sent[first_zero:]
    assert sent[first_zero - 1][2] != zero  # the policy was driving the base up to the press
    assert any(r.api_id == api.STOP_MOVE and r.received_ns > t_msg for r in emulator.received)
    # Every later tick holds: L1+A did not resume past the latched e-stop.
    assert all(d.paused and d.desired.hold for d, _ in log.records[k_stop:])
    assert runtime.remote.presses == [ESTOP, PAUSE_RESUME]


def test_l1_a_pauses_and_resumes():
    runtime = runtime_on(93)
    log = TickLog(runtime)
    emulator = runtime.devices.base.emulator
    sent = {}

    def operator():
        while len(log.records) < 10:
            log.wait_tick()
        log.wait_tick()
        sent["pause"] = time.monotonic_ns()
        emulator.press("L1", "A")
        time.sleep(0.3)
        emulator.release()
        time.sleep(0.1)
        sent["resume"] = time.monotonic_ns()
        emulator.press("A", "L1")
        time.sleep(0.1)
        emulator.release()
        time.sleep(0.3)

    run_with(runtime, 2.0, operator)
    k_pause = log.first(lambda d: d.paused)
    assert k_pause <= log.first(lambda d: True, after_ns=sent["pause"])
    k_resume = log.first(lambda d: not d.paused, after_ns=sent["resume"])
    assert k_resume <= log.first(lambda d: True, after_ns=sent["resume"])
    assert all(d.paused for d, _ in log.records[k_pause:k_resume])
    assert not runtime.safety.faulted and not log.records[-1][0].paused


def test_remote_buttons_off_leaves_the_remote_alone():
    runtime = runtime_on(94, remote_buttons=False)
    assert runtime.remote is None and runtime.devices.base.remote_listeners == []
