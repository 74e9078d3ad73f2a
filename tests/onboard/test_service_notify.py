"""sd_notify: READY once warm, WATCHDOG from the fast loop after good ticks, none while it is stalled, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from anchorvla.cli import main as anchorvla
from onboard.service import Notifier
from tests.service_helpers import REPO, devices_and_engine, run_serve, short_dir, sim_config, write_config


class NotifyListener:
    """The test's stand-in for systemd: a bound Unix datagram socket recording (time, message)."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self):
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def times_of(self, key: str) -> list[float]:
        return [t for t, m in self.messages if key in m.split("\n")]


@pytest.fixture
def listener():
    d = short_dir()
    lis = NotifyListener(d / "notify.sock")
    yield lis
    lis.close()


def test_notifier_address_and_watchdog_interval():
    n = Notifier({"NOTIFY_SOCKET": "@abstract/name", "WATCHDOG_USEC": "2000000"})
    assert n.address == "\0abstract/name"
    assert n.watchdog_interval_ns == 1_000_000_000  # half of WatchdogSec
    n.close()
    other_pid = Notifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert other_pid.watchdog_interval_ns is None  # the watchdog is meant for another process
    other_pid.close()
    assert not Notifier({}).enabled


def test_ready_then_watchdog_and_pings_stop_while_the_fast_loop_is_stalled(listener):
    config = sim_config(short_dir(), service={"start_idle": False, "control": {"enabled": False}})
    devices, engine = devices_and_engine(config)
    notifier = Notifier(
        {"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"}
    )  # ping at most every 100 ms
    real_read = devices.arm.read_state
    stall = {"at": None}

    def read_state():
        if stall["at"] is None and len(listener.times_of("WATCHDOG=1")) >= 8:
            stall["at"] = time.monotonic()
            time.sleep(1.0)  # the fast loop hangs inside a tick
        return real_read()

    devices.arm.read_state = read_state
    t_start = time.monotonic()
    result = run_serve(config, 3.0, notifier=notifier, devices=devices, engine=engine)
    time.sleep(0.1)
    ready = listener.times_of("READY=1")
    pings = listener.times_of("WATCHDOG=1")
    stopping = listener.times_of("STOPPING=1")
    assert len(ready) == 1 and ready[0] > t_start
    assert pings and pings[0] >= ready[0]  # READY first
    assert stopping and stopping[0] >= pings[-1]
    assert result["watchdog_pings"] == len(pings)
    assert stall["at"] is not None, "the stall was never injected"
    before = [t for t in pings if t < stall["at"]]
    gaps_before = np.diff(before)
    assert max(gaps_before) < 0.5  # regular pings at ~100 ms (a loaded machine may stretch a few)
    during = [t for t in pings if stall["at"] <= t < stall["at"] + 0.95]
    assert during == []  # a stalled loop sends nothing: systemd's WatchdogSec would expire
    assert any(t > stall["at"] + 1.0 for t in pings)  # and the pings come back once the tick ends


def test_no_pings_while_the_arm_does_not_answer(listener):
    config = sim_config(short_dir(), service={"start_idle": False, "control": {"enabled": False}})
    devices, engine = devices_and_engine(config)
    notifier = Notifier({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"})

    def go_silent():
        while len(listener.times_of("WATCHDOG=1")) < 3:
            time.sleep(0.01)
        devices.arm.silent = True  # ticks go on (the safety layer holds), but none is a good tick

    run_serve(config, 1.5, client=go_silent, notifier=notifier, devices=devices, engine=engine)
    pings = listener.times_of("WATCHDOG=1")
    assert 3 <= len(pings) <= 5  # one or two in flight when the arm went silent
    assert pings[-1] < listener.times_of("STOPPING=1")[0] - 0.5


def test_service_run_command_under_a_fake_notify_socket_stops_on_sigterm(listener):
    d = short_dir()
    cfg = write_config(
        d / "svc.yaml", service={"control": {"socket": str(d / "control.sock"), "group": "root"}}
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "anchorvla.cli", "service", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 20
        while len(listener.times_of("WATCHDOG=1")) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        # The operator's client in this process, the controller in that one.
        assert anchorvla(["ctl", "--socket", str(d / "control.sock"), "start", "wave", "hello"]) == 0
        time.sleep(0.3)
        assert anchorvla(["ctl", "--socket", str(d / "control.sock"), "estop"]) == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    kinds = [m.split("\n")[0] for _, m in listener.messages]
    assert kinds[0] == "READY=1"
    assert kinds.count("WATCHDOG=1") >= 3
    assert "STATUS=running: wave hello" in kinds and "STATUS=estopped: wave hello" in kinds
    assert kinds[-1] == "STOPPING=1"
    assert "exit" in out and "signal:SIGTERM" in out
    assert "INFO anchorvla.service: ready" in err and "reason=signal:SIGTERM" in err
    assert (
        f'operator command command=start peer="uid=0 pid={os.getpid()}" state=running instruction="wave hello"'
        in err
    )
    assert "WARNING anchorvla.control: operator command command=estop" in err
