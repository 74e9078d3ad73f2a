"""The controller process: start-up order, the two loops, signals, safe stop and the summary.

Start-up: drivers (arm, base, cameras), engine warm-up (off the event loop), then the loops. Shutdown on
SIGINT/SIGTERM, on `--duration`, or on `stop()`: the loops end, then the safe stop runs (base Move 0 then
StopMove; the arm holds its last commanded position), then devices close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass, field

from anchorvla.errors import DeviceError, UserError
from drivers.protocols import Arm, Base, Camera
from onboard.config import Config
from onboard.loops import build_loops
from onboard.realtime import set_affinity, set_thread_fifo, set_thread_normal
from onboard.remote import attach_remote_buttons
from onboard.telemetry import summary
from policy_runtime.engines.base import PolicyEngine

log = logging.getLogger("anchorvla")


@dataclass
class Devices:
    arm: Arm
    base: Base | None
    cameras: list[Camera] = field(default_factory=list)


class Runtime:
    def __init__(self, config: Config, devices: Devices, engine: PolicyEngine, policy_loop: bool = True):
        """`policy_loop=False`: the slow loop does not run; another source fills the schedule (teleoperation)."""
        self.config = config
        self.devices = devices
        self.engine = engine
        self.policy_loop = policy_loop
        loops = build_loops(
            config=config, arm=devices.arm, base=devices.base, cameras=devices.cameras, engine=engine
        )
        self.schedule, self.safety, self.stats = loops.schedule, loops.safety, loops.stats
        self.fast, self.slow, self.stops = loops.fast, loops.slow, loops.stops
        self._stop = asyncio.Event()
        self._loops_running = False  # the fast loop is the arm's writer while True
        self.exit_reason = "running"
        self.ready_listeners: list = []  # called once the loops start (systemd READY)
        self.stop_listeners: list = []  # called with the reason when the process starts stopping (systemd STOPPING)
        self.remote = attach_remote_buttons(self)  # the Go2 remote's e-stop and pause (onboard/remote.py)
        self.fast.link_lost_listeners.append(self._link_lost)

    def stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.exit_reason = reason
            self._stop.set()
            for listener in self.stop_listeners:
                listener(reason)

    # Operator control (onboard/control.py calls these on the event-loop thread, between ticks).
    def pause(self) -> None:
        """Hold the arm and stop the base from the next tick on; the slow loop stops inferring."""
        self.fast.paused = True
        self.schedule.clear()

    def resume(self) -> None:
        """Run the policy again from a fresh plan. Refused while a fault is latched."""
        if self.safety.faulted:
            names = ", ".join(f.name for f in self.safety.faults)
            raise UserError(f"faults latched ({names}): send reset-fault first")
        self.schedule.clear()
        self.fast.paused = False

    def set_instruction(self, instruction: str) -> None:
        """A new task's instruction (operator start calls `new_episode` too)."""
        self.fast.instruction = instruction
        self.slow.instruction = instruction

    def new_episode(self) -> None:
        """An episode begins (operator start): the next observation's frames become its anchor frames
        (AnchorVLA4D) and the gripper decision starts afresh (AnchorRefine)."""
        self.slow.new_episode()
        self.fast.new_episode()

    def estop(self, reason: str):
        """Pause and latch the operator_estop fault now (every command becomes a hold), write the arm's hold goal
        and base Move 0 at once (safety.stop.hold_now: the calls of a tick, on this thread, not one tick later);
        returns the e-stop sequence's device part (base StopMove or Damp, safety.stop.estop_base; the fast loop
        holds the arm). That part can block for the step timeout: the control endpoint runs it off the event
        loop, whose ticks go on."""
        self.pause()
        self.safety.report_fault("operator_estop", reason, time.monotonic_ns())
        self.safety.take_stop_request()  # the returned sequence is the reaction
        self.stops.hold_now()
        return lambda: self.stops.estop(reason, hold_arm=False, latch=None)

    def _link_lost(self, device: str, detail: str) -> None:
        """A device's link is gone (adapter unplugged): its comms fault is latched and the base stopped (the fault
        reaction); nothing more can be done with it in this process, so the run ends with that reason. Motion
        cannot resume if the device comes back: the driver does not reopen it and the fault stays latched."""
        log.error("%s link lost, ending the run: %s", device, detail)
        self.stop(f"fault:{device}_comms")

    def _start_devices(self) -> None:
        d = self.devices
        d.arm.start()
        self.safety.seed(d.arm.read_state())  # the envelope starts from the measured pose
        if d.base is not None:
            d.base.start()
        for cam in d.cameras:
            cam.start()
        self._wait_for_first_frames()

    def _wait_for_first_frames(self) -> None:
        """Every camera's first frame within `safety.staleness.first_frame_s`, else one line (no run starts on a
        camera that never delivers)."""
        timeout_s = self.config.safety.staleness.first_frame_s
        deadline = time.monotonic() + timeout_s
        waiting = {cam.name: cam for cam in self.devices.cameras}
        errors: dict[str, str] = {}
        while waiting:
            for name, cam in list(waiting.items()):
                try:
                    if cam.latest() is not None:
                        del waiting[name]
                except Exception as exc:  # noqa: BLE001 - reported in the line below if it lasts
                    errors[name] = f"{type(exc).__name__}: {exc}"
            if waiting and time.monotonic() >= deadline:
                name = next(iter(waiting))
                why = f" (latest: {errors[name]})" if name in errors else ""
                raise DeviceError(
                    f"camera '{name}' delivered no frame within {timeout_s:g} s of starting{why}: check its "
                    "cable and that no other program holds it (safety.staleness.first_frame_s sets the wait)"
                )
            if waiting:
                time.sleep(0.01)

    def safe_stop(self) -> None:
        """Base Move 0 then StopMove, the arm holding (safety/stop.py: each step has a timeout and tolerates a
        device that stopped answering). While the loops run, the fast loop is the arm's one writer and holds
        it; once they have ended, the configured exit sequence runs (safety.stop.on_exit: safe stop, or park
        and release)."""
        if self.safety.previous_goal is None:  # the arm never started: nothing was commanded
            return
        if self._loops_running:
            self.stops.safe_stop(hold_arm=False)
        else:
            self.stops.on_exit()

    def reset_faults(self) -> None:
        """Operator reset: clear latched faults and the stale plan; the policy takes over from the held pose."""
        self.schedule.clear()
        self.safety.reset()

    def _close_devices(self) -> None:
        for dev in [*self.devices.cameras, self.devices.base, self.devices.arm]:
            if dev is None:
                continue
            try:
                dev.stop()
            except Exception as exc:  # closing must go on for the others
                log.warning("closing %s: %s", type(dev).__name__, exc)

    async def run(self, duration_s: float | None = None) -> dict:
        loop = asyncio.get_running_loop()
        # A thread holding the GIL (Python glue around inference kernels) makes the fast loop wait up to the
        # switch interval (5 ms by default) after its sleep ends; 0.5 ms bounds that wait.
        previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(
            min(previous_switch_interval, self.config.control.gil_switch_interval_ms / 1000.0)
        )
        realtime = set_thread_fifo(self.config.service.realtime_priority)
        set_affinity(self.config.service.cpu_affinity)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, f"signal:{signal.Signals(sig).name}")
        try:
            await loop.run_in_executor(None, self._start_devices)
            await loop.run_in_executor(None, self.engine.warmup)
            tasks = [asyncio.ensure_future(self.fast.run(self._stop))]
            if self.policy_loop:
                tasks.append(asyncio.ensure_future(self.slow.run(self._stop)))
            self._loops_running = True
            for listener in self.ready_listeners:
                listener()
            if duration_s is not None:
                loop.call_later(duration_s, self.stop, "duration")
            done, _ = await asyncio.wait(
                [*tasks, asyncio.ensure_future(self._stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task in tasks and task.exception() is not None:
                    self.stop("error")
                    raise task.exception()
            self._stop.set()
            for task in tasks[1:]:
                task.cancel()  # an inference in flight is abandoned; the fast loop ends its tick by itself
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._loops_running = False
            sys.setswitchinterval(previous_switch_interval)
            if realtime:
                set_thread_normal()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self.safe_stop()
            self.slow.close()
            self._close_devices()
            self.engine.close()
        if not self.stats.ended_ns:
            self.stats.ended_ns = time.monotonic_ns()
        result = summary(
            self.stats, self.schedule.stale_dropped, self.safety.counters.as_dict(), self.exit_reason
        )
        result["faults"] = [f"{f.name}: {f.detail}" for f in self.safety.faults]  # latched at the end
        return result


def run_event_loop(coro):
    """Run a coroutine on uvloop when it is installed (tighter timers), else on stock asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    uvloop.install()
    return asyncio.run(coro)
