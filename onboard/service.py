"""Running the controller as a systemd service: sd_notify, the watchdog, and the `Service` that adds
operator control, recording and the live view to the runtime.

systemd protocol (sd_notify(3)): datagrams of `KEY=VALUE` lines to the Unix socket in NOTIFY_SOCKET
(a leading `@` means the abstract namespace). We send READY=1 once drivers and engine are warm and the
loops run, WATCHDOG=1 from the fast loop after good ticks (at most every half WATCHDOG_USEC), and
STOPPING=1 when the safe stop begins. A stuck fast loop sends no pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time

from anchorvla.errors import UserError
from onboard.config import Config
from onboard.journal import event
from onboard.runtime import Devices, Runtime
from policy_runtime.engines.base import PolicyEngine

log = logging.getLogger("anchorvla.service")
STOP_MARGIN_S = 10  # beyond the exit sequence: closing the devices and the recording


def unit_stop_timeout_s(config: Config) -> int:
    """The unit's TimeoutStopSec for `config` (what `service install` writes): the longest exit sequence (base
    Move 0 and StopMove, a park of up to safety.stop.park_timeout_s, then the torque release or a hold, each
    step up to step_timeout_s) plus STOP_MARGIN_S, so systemd's SIGKILL never cuts a park short."""
    stop = config.safety.stop
    return math.ceil(stop.park_timeout_s + 4 * stop.step_timeout_s) + STOP_MARGIN_S


class Notifier:
    """Sends sd_notify datagrams; does nothing when NOTIFY_SOCKET is unset (not started by systemd)."""

    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None
        self.watchdog_interval_ns = self._watchdog_interval_ns(env)

    @staticmethod
    def _watchdog_interval_ns(env) -> int | None:
        """Half of WATCHDOG_USEC (systemd's advice), when the watchdog is meant for this process."""
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
            return None
        try:
            return int(usec) * 1000 // 2
        except ValueError:
            raise UserError(f"WATCHDOG_USEC={usec!r} is not a number of microseconds") from None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd gone or socket removed: keep controlling the robot
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogPinger:
    """A fast-loop tick listener: WATCHDOG=1 after a good tick, at most once per interval.

    A good tick is one that completed with an answer from the arm; ticks where the arm stays silent send
    nothing, so a dead servo bus also ends in a restart (which reopens the port) once WatchdogSec passes.
    """

    def __init__(self, notifier: Notifier, runtime: Runtime):
        self.notifier = notifier
        self.runtime = runtime
        self.interval_ns = notifier.watchdog_interval_ns
        self.last_ping_ns: int | None = None
        self.pings = 0

    def __call__(self, tick_ns: int) -> None:
        latest = self.runtime.fast.latest
        if latest is None or latest.arm is None:
            return
        now = time.monotonic_ns()
        if self.last_ping_ns is not None and now - self.last_ping_ns < self.interval_ns:
            return
        self.notifier.send("WATCHDOG=1")
        self.last_ping_ns = now
        self.pings += 1


class Service:
    """The runtime plus what running as a service adds: sd_notify and the watchdog, the operator control
    endpoint, episode recording and the live view, each hooked in through the runtime's listener lists."""

    def __init__(
        self, config: Config, devices: Devices, engine: PolicyEngine, notifier: Notifier | None = None
    ):
        from onboard.control import ControlEndpoint, Operator
        from onboard.recorder import EpisodeRecorder, ResidualTap

        self.config = config
        self.notifier = notifier or (Notifier() if config.service.notify else Notifier({}))
        tap = ResidualTap(engine) if config.recording.enabled else None
        self.runtime = Runtime(config, devices, tap or engine)
        self.operator = Operator(self.runtime)
        # Built in the order of what can refuse the config, before any thread starts.
        control = config.service.control
        self.endpoint = ControlEndpoint(control, self.operator) if control.enabled else None
        self.liveview = None
        if config.telemetry.liveview.enabled:
            from onboard.liveview import LiveView

            self.liveview = LiveView(config, self.runtime)
            self.liveview.attach()
        self.recorder = None
        if tap is not None:
            self.recorder = EpisodeRecorder(config, self.runtime, tap)
            self.operator.listeners.append(self.recorder.on_operator)
            self.operator.recording_status = self.recorder.status
        if config.service.start_idle:
            self.runtime.pause()
        self.pinger = WatchdogPinger(self.notifier, self.runtime)
        if self.pinger.interval_ns is not None:
            self.runtime.fast.tick_listeners.append(self.pinger)
        self.operator.listeners.append(self._on_operator)
        self.runtime.ready_listeners.append(self._on_ready)
        self.runtime.stop_listeners.append(self._on_stop)

    def _on_ready(self) -> None:
        runtime = self.runtime
        state = "idle (waiting for start)" if runtime.fast.paused else "running"
        self.notifier.send("READY=1", f"STATUS={state}")
        event(
            log,
            logging.INFO,
            "ready",
            state=state,
            rate_hz=self.config.control.rate_hz,
            engine=self.config.policy.engine,
        )
        if self.recorder is not None and not runtime.fast.paused:
            self.recorder.begin(runtime.fast.instruction)

    def _on_operator(self, command: str, args: dict) -> None:
        """`systemctl status` shows the operator's last word: e.g. "running: pick the cup"."""
        self.notifier.send(f"STATUS={self.operator.state()}: {args.get('instruction', '')}")

    def _on_stop(self, reason: str) -> None:
        self.notifier.send("STOPPING=1", f"STATUS=stopping ({reason})")
        event(log, logging.INFO, "stopping", reason=reason)
        if self.recorder is not None:  # no tick follows: the writer joins the episode during the safe stop
            self.recorder.end("shutdown")

    async def run(self, duration_s: float | None = None) -> dict:
        try:
            if self.endpoint is not None:
                await self.endpoint.start()
            result = await self.runtime.run(duration_s)
        finally:
            if self.endpoint is not None:
                await self.endpoint.close()
            if self.recorder is not None:
                self.recorder.close()
            if self.liveview is not None:
                self.liveview.close()
            self.notifier.close()
        result["watchdog_pings"] = self.pinger.pings
        return result


async def serve(
    config: Config,
    devices: Devices,
    engine: PolicyEngine,
    duration_s: float | None = None,
    notifier: Notifier | None = None,
) -> dict:
    """The service's main loop (what `anchorvla service run` runs)."""
    return await Service(config, devices, engine, notifier).run(duration_s)
