"""The two loops. Both run on one asyncio event loop; inference runs in a worker thread.

Fast loop: at absolute deadlines of the control rate, read the robot, take the schedule's action for this
tick, add the residual correction, pass the safety layer, command the drivers. It never waits for the slow
loop: with no action it holds the arm and stops the base.

Slow loop: snapshot an observation (the state the fast loop read at its latest tick plus the newest
frames), run the engine off the event-loop thread, hand the chunk to the schedule, and start the next
inference early enough, from the measured latency, that the next chunk arrives before this one runs out. With
prefix conditioning (real-time chunking) each observation carries the planned actions that will run until its
chunk takes over, the chunk is conditioned on them and runs on from where they end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from anchorvla.errors import DeviceError, LinkLost
from drivers.protocols import Arm, Base, Camera
from drivers.types import ArmState, BaseState, BaseVelocity, Command
from onboard.config import Config
from onboard.gripper import GripperHysteresis
from onboard.realtime import set_thread_fifo, set_thread_normal
from onboard.schedule import ChunkSchedule, PlannedAction
from onboard.telemetry import RunStats
from onboard.timing import wait_until
from policy_runtime.engines.base import PolicyEngine
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel
from safety.envelope import SafetyLayer
from safety.stop import StopSequences

log = logging.getLogger("anchorvla")


@dataclass(frozen=True)
class TickSnapshot:
    """What the fast loop read at one tick; the slow loop builds observations from it."""

    tick_ns: int
    arm: ArmState | None
    base: BaseState | None


@dataclass(frozen=True)
class TickDecision:
    """What one tick decided (recording, replay): the plan, the desired and the sent command."""

    tick_ns: int
    planned: PlannedAction | None
    desired: Command
    command: Command
    faults: tuple[str, ...]  # faults latched when the safety layer filtered
    paused: bool


class ActionMapper:
    """Turns an action vector (named channels) into a Command; channels the policy lacks hold/stop."""

    def __init__(self, channels: tuple[str, ...], joint_names: tuple[str, ...]):
        index = {name: i for i, name in enumerate(channels)}
        self.arm_idx = np.array([index.get(arm_channel(j), -1) for j in joint_names])
        self.base_idx = [index.get(c, -1) for c in BASE_CHANNELS]
        self.joint_names = joint_names

    def command(self, action: np.ndarray, hold_positions: np.ndarray, t_ns: int) -> Command:
        arm = np.where(self.arm_idx >= 0, action[np.maximum(self.arm_idx, 0)], hold_positions)
        vx, vy, wz = (float(action[i]) if i >= 0 else 0.0 for i in self.base_idx)
        return Command(t_ns, self.joint_names, arm, BaseVelocity(vx, vy, wz))


@dataclass(frozen=True)
class ObservationInputs:
    """What the fast loop last read, for the slow loop's next observation."""

    latest: TickSnapshot | None
    previous: TickSnapshot | None  # the tick before `latest` (the state delta reads it)
    frames: dict  # camera name -> newest Frame
    cameras: tuple[str, ...]  # every configured camera's name
    paused: bool


class FastLoop:
    def __init__(
        self,
        *,
        arm: Arm,
        base: Base | None,
        cameras: list[Camera],
        engine: PolicyEngine,
        schedule: ChunkSchedule,
        safety: SafetyLayer,
        stats: RunStats,
        rate_hz: float,
        fine_wait_ms: float,
        instruction: str,
        use_residual: bool,
        fault_reaction: Callable[[], object] | None = None,
    ):
        self.arm, self.base, self.cameras = arm, base, cameras
        self.engine, self.schedule, self.safety, self.stats = engine, schedule, safety, stats
        self.period_ns = round(1e9 / rate_hz)
        self.fine_wait_ns = int(fine_wait_ms * 1e6)
        self.instruction = instruction
        self.use_residual = use_residual
        self.mapper = ActionMapper(engine.channels, arm.joint_names)
        self.next_deadline_ns = 0
        self.latest: TickSnapshot | None = None
        self.previous: TickSnapshot | None = None  # the tick before `latest` (the state delta reads it)
        self.latest_frames: dict = {}  # camera name -> the Frame the latest tick saw (the recorder keeps them)
        self.last_command: Command | None = None
        self.tick_listeners: list[Callable[[int], None]] = []  # called after each completed tick (watchdog)
        # Called at the start of each tick with its deadline, before the robot is read (teleoperation pushes the
        # operator's action for this tick into the schedule there).
        self.before_tick: list[Callable[[int], None]] = []
        self.paused = False  # operator pause: hold the arm, stop the base (Runtime.pause)
        self.last_decision: TickDecision | None = None
        self.fault_reaction = fault_reaction  # started once when a safety fault latches
        self.gripper = GripperHysteresis()  # AnchorRefine's discrete gripper decision (chunks that carry one)
        # Called once per device ("arm", "base") whose link is gone for good (LinkLost), with the reason.
        self.link_lost_listeners: list[Callable[[str, str], None]] = []
        self.lost_links: dict[str, str] = {}
        self._failing_cameras: set[str] = set()  # cameras whose latest() raises now (logged once)

    def _comms_failed(self, what: str, exc: DeviceError, tick_ns: int) -> None:
        """A read or write of `what` raised: the safety layer counts it; a lost link latches at once and the
        listeners (the runtime ends the run) hear of it once."""
        self.stats.device_errors += 1
        lost = isinstance(exc, LinkLost)
        self.safety.comms_failed(what, str(exc), tick_ns, link_lost=lost)
        if lost and what not in self.lost_links:
            self.lost_links[what] = str(exc)
            for listener in self.link_lost_listeners:
                listener(what, str(exc))

    def _read(self, device, what: str, tick_ns: int):
        try:
            return device.read_state()
        except DeviceError as exc:
            self._comms_failed(what, exc, tick_ns)
            return None

    def _desired(
        self, planned: PlannedAction | None, arm: ArmState | None, base: BaseState | None, tick_ns: int
    ) -> Command:
        if planned is None:
            if self.stats.chunks:
                self.stats.underruns += 1
            return self.safety.hold(arm, tick_ns)
        action = planned.action
        if self.use_residual and arm is not None:
            obs = Observation(tick_ns, arm, base, {}, self.instruction)  # the residual reads no images
            correction = self.engine.residual(obs, planned.chunk, planned.j, action)
            if correction is not None:
                action = action + self.safety.cap_residual(correction, self.engine.channels)
        action, gripper_closed = self._gripper_decision(planned, action)
        hold = (
            self.last_command.arm_positions
            if self.last_command is not None
            else (arm.positions if arm else None)
        )
        if hold is None:
            hold = np.zeros(len(self.arm.joint_names))
        command = self.mapper.command(action, hold, tick_ns)
        return dataclasses.replace(command, gripper_closed=True) if gripper_closed else command

    def _gripper_decision(self, planned: PlannedAction, action: np.ndarray) -> tuple[np.ndarray, bool]:
        """With a gripper head (AnchorRefine), the hysteresis decision replaces the plan's gripper channel with
        the closed or open goal (or, when the plan has no open goal, only with the closed one); returns the action
        and whether the decision is 'closed'."""
        plan = planned.chunk.gripper
        if plan is None:
            return action, False
        closed = self.gripper.update(float(plan.logits[planned.j]), plan.margin)
        if not closed and plan.open_value is None:  # open (or undecided): the plan's own value runs
            return action, False
        if closed is None:
            return action, False
        action = action.copy()
        action[plan.channel] = plan.closed_value if closed else plan.open_value
        return action, closed

    def new_episode(self) -> None:
        """Forget the gripper decision of the episode before."""
        self.gripper.reset()

    def frames(self) -> dict:
        """The newest frame of each camera that has one (never blocks). A camera whose `latest()` raises (a
        driver whose device was unplugged) has none: the safety layer holds while any camera has no frame."""
        frames = {}
        for cam in self.cameras:
            try:
                f = cam.latest()
            except Exception as exc:  # noqa: BLE001 - a camera's failure must never stop the control loop
                if cam.name not in self._failing_cameras:
                    self._failing_cameras.add(cam.name)
                    log.warning("camera %s: no frame: %s: %s", cam.name, type(exc).__name__, exc)
                continue
            if cam.name in self._failing_cameras:
                self._failing_cameras.discard(cam.name)
                log.info("camera %s: delivering again", cam.name)
            if f is not None:
                frames[cam.name] = f
        return frames

    def inputs(self) -> ObservationInputs:
        return ObservationInputs(
            self.latest, self.previous, self.frames(), tuple(c.name for c in self.cameras), self.paused
        )

    def _send(self, cmd: Command, tick_ns: int) -> None:
        try:
            self.arm.write_goal(cmd.arm_positions)
        except DeviceError as exc:
            self._comms_failed("arm", exc, tick_ns)
        if self.base is not None and not self.safety.faulted:  # after a fault the stop sequence owns the base
            try:
                self.base.move(cmd.base.vx, cmd.base.vy, cmd.base.wz)
            except DeviceError as exc:
                self._comms_failed("base", exc, tick_ns)

    def tick(self, tick_ns: int) -> None:
        """One control step for the tick whose deadline is `tick_ns`."""
        for hook in self.before_tick:
            hook(tick_ns)
        arm = self._read(self.arm, "arm", tick_ns)
        base = self._read(self.base, "base", tick_ns) if self.base is not None else None
        self.previous, self.latest = self.latest, TickSnapshot(tick_ns, arm, base)
        self.latest_frames = self.frames()
        self.safety.observe(tick_ns, arm, base, self.latest_frames, tuple(c.name for c in self.cameras))
        planned = self.schedule.action_at(tick_ns, self.period_ns // 2)
        if planned is not None and not self.safety.chunk_fresh(planned.chunk.t_obs_ns, tick_ns):
            planned = None
        desired = (
            self.safety.hold(arm, tick_ns) if self.paused else self._desired(planned, arm, base, tick_ns)
        )
        faults = tuple(f.name for f in self.safety.faults)
        cmd = self.safety.filter(desired, arm, self.period_ns / 1e9)
        self._send(cmd, tick_ns)
        self.last_command = cmd
        self.last_decision = TickDecision(tick_ns, planned, desired, cmd, faults, self.paused)
        if self.safety.take_stop_request() and self.fault_reaction is not None:
            self.fault_reaction()

    async def run(self, stop: asyncio.Event) -> None:
        deadline = time.monotonic_ns() + self.period_ns
        self.stats.started_ns = deadline
        while not stop.is_set():
            self.next_deadline_ns = deadline
            await wait_until(deadline, self.fine_wait_ns)
            if stop.is_set():
                break
            start = time.monotonic_ns()
            self.stats.lateness_ms.add((start - deadline) / 1e6)
            if start >= deadline + self.period_ns:
                missed = (start - deadline) // self.period_ns
                self.stats.overruns += 1
                # Run this tick for the current slot and skip the missed ones.
                deadline += missed * self.period_ns
            self.tick(deadline)
            self.stats.ticks += 1
            self.stats.tick_compute_ms.add((time.monotonic_ns() - start) / 1e6)
            for listener in self.tick_listeners:
                listener(deadline)
            deadline += self.period_ns
        self.next_deadline_ns = deadline
        self.stats.ended_ns = time.monotonic_ns()


class SlowLoop:
    """The inference side as two steps that any driver of time calls: `begin(now)` takes the observation (or
    None: nothing to infer from yet, a fault latched, paused), the caller runs `engine.infer` on it, then
    `deliver(...)` hands the chunk to the schedule (or `failed(...)` records an engine failure). `run` drives
    the steps in real time for the runtime; the simulator's eval drives the same steps on a virtual clock."""

    def __init__(
        self,
        *,
        fast: FastLoop,
        engine: PolicyEngine,
        schedule: ChunkSchedule,
        safety: SafetyLayer,
        stats: RunStats,
        max_frame_age_s: float,
        start_margin_ticks: float,
        instruction: str,
        worker_priority: int = 0,
        roll_forward: bool = False,
        prefix_conditioning: bool = False,
    ):
        self.fast, self.engine, self.schedule, self.safety, self.stats = fast, engine, schedule, safety, stats
        self.period_ns = fast.period_ns
        self.max_frame_age_ns = int(max_frame_age_s * 1e9)
        self.margin_ns = int(start_margin_ticks * self.period_ns)
        self.instruction = instruction
        # The worker starts from the event-loop thread and would inherit its real-time priority: set its own.
        initializer = (lambda: set_thread_fifo(worker_priority)) if worker_priority > 0 else set_thread_normal
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="inference", initializer=initializer
        )
        self.chunk_listeners: list[Callable[[Observation, ActionChunk], None]] = []  # recording, live view
        self.anchor_frames: dict = {}
        self.roll_forward = roll_forward
        self.prefix_conditioning = prefix_conditioning

    def new_episode(self) -> None:
        """The next observation's frames become the episode's anchor frames (AnchorVLA4D)."""
        self.anchor_frames.clear()

    def latency_estimate_ns(self) -> int:
        """A high estimate of the next inference's latency: the max of the last few."""
        recent = self.stats.inference_ms.recent(8)
        return int(max(recent) * 1e6) if recent else 0

    def next_start_ns(self) -> int | None:
        """When to take the next observation so its chunk is ready before the plan runs out."""
        until = self.schedule.planned_until_ns
        if until is None:
            return None
        return until + self.period_ns - self.latency_estimate_ns() - self.margin_ns

    def observe(self) -> Observation | None:
        inputs = self.fast.inputs()
        snap = inputs.latest
        if snap is None or snap.arm is None:
            return None
        frames = inputs.frames
        stale = [name for name, f in frames.items() if snap.tick_ns - f.t_ns > self.max_frame_age_ns]
        missing = [name for name in inputs.cameras if name not in frames]
        if stale or missing:
            self.stats.stale_observations += 1
            return None
        for name, f in frames.items():
            self.anchor_frames.setdefault(name, f)
        prev = inputs.previous
        return Observation(
            snap.tick_ns, snap.arm, snap.base, frames, self.instruction, dict(self.anchor_frames),
            previous_arm=prev.arm if prev else None, previous_base=prev.base if prev else None,
        )  # fmt: skip

    def rolled_forward(self, obs: Observation) -> Observation:
        """VLASH's rolled-forward state: the observation as of when its chunk will start to run (one latency
        estimate ahead, on the tick grid), its arm at the positions the plan queued for then; the images stay
        as they are. Without a plan reaching that far it is returned unchanged."""
        ahead = math.ceil(self.latency_estimate_ns() / self.period_ns) * self.period_ns
        planned = self.schedule.planned_at(obs.t_ns + ahead, self.period_ns // 2)
        if ahead == 0 or planned is None:
            return obs
        arm_idx = self.fast.mapper.arm_idx
        positions = np.where(arm_idx >= 0, planned.action[np.maximum(arm_idx, 0)], obs.arm.positions)
        arm = dataclasses.replace(obs.arm, t_ns=obs.t_ns + ahead, positions=positions)
        return dataclasses.replace(
            obs, t_ns=obs.t_ns + ahead, arm=arm, previous_arm=obs.arm, previous_base=obs.base
        )

    def with_prefix(self, obs: Observation, tick_ns: int, now_ns: int) -> Observation:
        """`obs` carrying the prefix of its chunk (`ChunkSchedule.prefix`): the chunk is expected for the first tick
        (on the grid of `tick_ns`, the tick it was read at) one latency estimate after `now_ns`, at least the next;
        it has as many actions as the last one. Unchanged while nothing is planned."""
        chunk = self.schedule.last_chunk
        if chunk is None:
            return obs
        estimate = self.latency_estimate_ns()
        arrival = tick_ns + max(1, math.ceil((now_ns + estimate - tick_ns) / self.period_ns)) * self.period_ns
        prefix = self.schedule.prefix(len(chunk), obs.t_ns, chunk.dt_ns, arrival, estimate)
        return obs if prefix is None else dataclasses.replace(obs, prefix=prefix)

    def begin(self, now_ns: int) -> Observation | None:
        """The observation for an inference starting at `now_ns`, marked started in the safety layer; None when
        there is nothing to infer from, a fault is latched or the operator paused."""
        obs = self.observe()
        if obs is None or self.safety.faulted or self.fast.inputs().paused:
            return None
        tick_ns = obs.t_ns
        if self.roll_forward:
            obs = self.rolled_forward(obs)
        if self.prefix_conditioning:
            obs = self.with_prefix(obs, tick_ns, now_ns)
        self.safety.inference_started(now_ns)
        return obs

    def failed(self, exc: BaseException) -> None:
        """The engine raised: counted and logged; the arm holds and the next `begin` retries."""
        self.safety.inference_finished()
        self.stats.inference_failures += 1
        log.warning("inference failed: %s", exc)

    def deliver(self, obs: Observation, chunk: ActionChunk, latency_ns: int, now_ns: int) -> bool:
        """The chunk inferred from `obs`, `latency_ns` after `begin`, arriving at `now_ns`: the latency feeds the
        start planning; a chunk with non-finite actions is rejected (False); else the schedule serves it from
        the fast loop's next tick on and the listeners see it."""
        self.safety.inference_finished()
        self.stats.inference_ms.add(latency_ns / 1e6)
        if not self.safety.accept_chunk(chunk.actions, now_ns):
            log.warning("chunk rejected: non-finite actions")
            return False
        self.stats.chunks += 1
        continue_at = None if obs.prefix is None else len(obs.prefix)
        self.schedule.push(chunk, self.fast.next_deadline_ns, self.latency_estimate_ns(), continue_at)
        for listener in self.chunk_listeners:
            listener(obs, chunk)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            start_at = self.next_start_ns()
            if start_at is not None and start_at > time.monotonic_ns():
                await asyncio.sleep((start_at - time.monotonic_ns()) / 1e9)
                continue  # the plan may have changed while waiting; recompute
            t0 = time.monotonic_ns()
            obs = self.begin(t0)
            if obs is None:
                await asyncio.sleep(self.period_ns / 1e9)
                continue
            try:
                chunk = await loop.run_in_executor(self.executor, self.engine.infer, obs)
            except asyncio.CancelledError:
                self.safety.inference_finished()
                raise
            except Exception as exc:  # an engine failure must never stop the controller: hold and retry
                self.failed(exc)
                await asyncio.sleep(self.period_ns / 1e9)
                continue
            now = time.monotonic_ns()
            if not self.deliver(obs, chunk, now - t0, now):
                await asyncio.sleep(self.period_ns / 1e9)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Loops:
    """The controller's parts for one set of devices and one engine, wired the one way (`build_loops`)."""

    schedule: ChunkSchedule
    safety: SafetyLayer
    stats: RunStats
    fast: FastLoop
    slow: SlowLoop
    stops: StopSequences | None


def build_loops(
    *,
    config: Config,
    arm: Arm,
    base: Base | None,
    cameras: list[Camera],
    engine: PolicyEngine,
    instruction: str | None = None,
    stop_sequences: bool = True,
) -> Loops:
    """Schedule, safety layer, fast and slow loop from a config. `instruction` defaults to the config's
    (`policy.instruction`). With `stop_sequences` (the runtime) a latched fault starts the configured reaction on
    the base; a lockstep driver of time (eval) leaves it out, as it runs no threads."""
    p, c = config.policy, config.control
    instruction = p.instruction if instruction is None else instruction
    stats = RunStats()
    schedule = ChunkSchedule(
        p.execute_horizon, p.blending.mode, p.blending.ticks, p.blending.decay, late=p.late_chunks
    )
    period_s = 1.0 / c.rate_hz
    # How many ticks a chunk lasts, which bounds an inference's time: its executed part; served late ('shift', or
    # continuing a prefix), as long as its actions stay runnable (safety.staleness.chunk_s).
    chunk_ticks = p.execute_horizon
    if p.late_chunks == "shift" or p.prefix_conditioning:
        chunk_ticks = max(chunk_ticks, int(config.safety.staleness.chunk_s * c.rate_hz))
    safety = SafetyLayer(config.safety, tuple(arm.joint_names), period_s, chunk_ticks)
    stops = StopSequences(config.safety.stop, arm, base, safety, period_s) if stop_sequences else None
    fast = FastLoop(
        arm=arm, base=base, cameras=cameras, engine=engine, schedule=schedule, safety=safety, stats=stats,
        rate_hz=c.rate_hz, fine_wait_ms=c.fine_wait_ms, instruction=instruction, use_residual=p.residual,
        fault_reaction=stops.start_fault_reaction if stops is not None else None,
    )  # fmt: skip
    slow = SlowLoop(
        fast=fast, engine=engine, schedule=schedule, safety=safety, stats=stats,
        max_frame_age_s=c.max_frame_age_s, start_margin_ticks=c.start_margin_ticks, instruction=instruction,
        worker_priority=max(0, config.service.realtime_priority - 1), roll_forward=p.roll_forward,
        prefix_conditioning=p.prefix_conditioning,
    )  # fmt: skip
    return Loops(schedule, safety, stats, fast, slow, stops)
