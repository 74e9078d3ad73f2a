"""Teleoperated demonstrations (`anchorvla record`): the operator drives the robot through the controller.

Every fast-loop tick, before the robot is read, the leader arm's pose (drivers/feetech/leader.py, mapped onto the
follower) and the hand controller's sticks (a gamepad or the Go2's remote, as `Sticks`) become this tick's action,
pushed into the schedule as a one-step chunk. From there it is the policy's path exactly: the safety envelope
filters it and the fast loop sends it. After the tick, what the robot measured, what was sent and each camera's
newest frame are one row of the episode being recorded.

A safety fault ends the session (the unfinished episode is dropped: it would show the arm holding). An episode
ends after `episode_ticks`, or on the operator's word; then comes a reset period (`reset_ticks`: the
operator still drives, nothing is recorded) before the next one. Finished episodes are handed to `save` on a
worker thread, never on the fast loop's. Operator events, from the controller's buttons or the terminal:

    end       start button, or Enter     save the episode (or skip the rest of the reset period)
    rerecord  select button, or r Enter  drop the episode and record it again at once
    discard   Y button, or d Enter       drop the episode; the next one follows the reset period
    quit      q Enter                    drop the unfinished episode and stop
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from anchorvla.errors import DeviceError
from drivers.types import Sticks
from onboard.config import BaseTeleopConfig
from policy_runtime.dataset import EpisodeRecord
from policy_runtime.preprocess import ProprioLayout
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel

log = logging.getLogger("anchorvla.record")

BUTTON_EVENTS = {"start": "end", "select": "rerecord", "Y": "discard"}
KEY_EVENTS = {"": "end", "r": "rerecord", "d": "discard", "q": "quit"}


class OperatorActions:
    """The operator as the controller's action source: the fast loop reads its `channels` (base velocities, then
    the arm's joints); there is no policy to infer from or residual to add."""

    def __init__(self, joint_names: tuple[str, ...], dt_ns: int):
        self.channels = BASE_CHANNELS + tuple(arm_channel(j) for j in joint_names)
        self.dt_ns = dt_ns

    def warmup(self) -> None:
        pass

    def infer(self, obs: Observation) -> ActionChunk:
        raise RuntimeError("teleoperation has no policy: the operator's actions come in per tick")

    def residual(self, obs, chunk, j, planned) -> None:
        return None

    def close(self) -> None:
        pass


class RemoteSticks:
    """The Go2's wireless remote as the base's input, read through the base driver's own DDS connection. On the
    emulated Go2 a scripted operator holds the sticks (drivers/emulated/go2.py `ScriptedRemote`)."""

    def __init__(self, base):
        from drivers.emulated.go2 import Go2BaseWithEmulator, ScriptedRemote

        self.base = base
        self.operator = ScriptedRemote(base.emulator) if isinstance(base, Go2BaseWithEmulator) else None

    def start(self) -> None:
        if self.operator is not None:
            self.operator.start()

    def latest(self) -> Sticks:
        return self.base.remote_sticks()

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()


def base_velocity(sticks: Sticks, config: BaseTeleopConfig) -> np.ndarray:
    """(vx, vy, wz): left stick up drives forward, left stick sideways strafes (left is +y), right stick sideways
    turns (left is +wz); each scaled to its maximum past the dead zone."""

    def axis(value: float) -> float:
        travel = (abs(value) - config.deadzone) / (1.0 - config.deadzone)
        return float(np.sign(value) * min(1.0, max(0.0, travel)))

    return np.array(
        [axis(sticks.ly) * config.max_vx, -axis(sticks.lx) * config.max_vy, -axis(sticks.rx) * config.max_wz]
    )


class ButtonPresses:
    """Operator events from a controller: a button counts when it goes down, not while it is held."""

    def __init__(self):
        self.held: frozenset[str] = frozenset()

    def events(self, sticks: Sticks) -> list[str]:
        pressed = sticks.buttons - self.held
        self.held = sticks.buttons
        return [BUTTON_EVENTS[b] for b in sorted(pressed) if b in BUTTON_EVENTS]


@dataclass
class EpisodeBuffer:
    """The rows of the episode being recorded."""

    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    def record(self, task: str) -> EpisodeRecord:
        return EpisodeRecord(
            np.stack(self.states), np.stack(self.actions), task, {c: np.stack(v) for c, v in self.images.items()}
        )


class TeleopSession:
    """One `anchorvla record` run on a Runtime whose slow loop is off (`Runtime(..., policy_loop=False)`)."""

    def __init__(
        self,
        runtime,
        leader,
        follower_calibration,
        sticks_source,
        base_config: BaseTeleopConfig,
        save: Callable[[EpisodeRecord], object],
        task: str,
        episodes: int,
        episode_ticks: int,
        reset_ticks: int,
    ):
        self.runtime, self.leader, self.sticks_source = runtime, leader, sticks_source
        self.follower_calibration = follower_calibration
        self.base_config, self.save, self.task = base_config, save, task
        self.episodes, self.episode_ticks, self.reset_ticks = episodes, episode_ticks, reset_ticks
        engine = runtime.engine
        self.channels, self.dt_ns = engine.channels, engine.dt_ns
        self.layout = ProprioLayout(self.channels, tuple(runtime.devices.arm.joint_names))
        self.presses = ButtonPresses()
        self.keys: queue.SimpleQueue[str] = queue.SimpleQueue()  # terminal lines (see `key`)
        self.saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self.saving: list[Future] = []
        self.saved = 0  # episodes handed to `save`
        self._begin("recording")
        self.pending_events: list[str] = []
        self.input_failures = 0  # ticks whose leader or sticks could not be read
        runtime.fast.before_tick.append(self.command)
        runtime.fast.tick_listeners.append(self.after_tick)

    def key(self, line: str) -> None:
        """A line the operator typed (from any thread)."""
        self.keys.put(line.strip().lower())

    # -- before each tick: the operator's action ------------------------------------------------------------
    def command(self, tick_ns: int) -> None:
        """Push this tick's action; when the leader or the sticks cannot be read, push nothing: the fast loop
        then holds the arm and stops the base, as it does when a policy's plan runs out."""
        try:
            leader = self.leader.read_state().positions
            sticks = self.sticks_source.latest() if self.sticks_source is not None else None
        except DeviceError as exc:
            self.input_failures += 1
            if self.input_failures == 1:
                log.warning("teleoperation input lost (%s): holding until it answers again", exc)
            return
        goal = self.leader.follower_goal(leader, self.follower_calibration)
        base = np.zeros(3)
        if sticks is not None:
            base = base_velocity(sticks, self.base_config)
            self.pending_events += self.presses.events(sticks)
        action = np.concatenate([base, goal])
        safety = self.runtime.safety
        if safety.accept_chunk(action[None], tick_ns):
            chunk = ActionChunk(tick_ns, self.dt_ns, self.channels, action[None])
            self.runtime.schedule.push(chunk, tick_ns)

    # -- after each tick: the recording ----------------------------------------------------------------------
    def after_tick(self, tick_ns: int) -> None:
        while not self.keys.empty():
            line = self.keys.get()
            if line in KEY_EVENTS:
                self.pending_events.append(KEY_EVENTS[line])
        events, self.pending_events = self.pending_events, []
        if self.runtime.safety.faulted and self.phase != "done":
            names = ", ".join(f.name for f in self.runtime.safety.faults)
            log.error("safety fault %s latched: recording stopped, the unfinished episode dropped", names)
            self.phase = "done"
            self.runtime.stop("fault")
            return
        if self.phase == "recording":
            self._append_row()
        self.phase_ticks += 1
        for event in events:
            self._on_event(event)
        if self.phase == "recording" and len(self.buffer) >= self.episode_ticks:
            self._finish_episode()
        elif self.phase == "reset" and self.phase_ticks >= self.reset_ticks:
            self._begin("recording")

    def _append_row(self) -> None:
        fast = self.runtime.fast
        snap, cmd = fast.latest, fast.last_command
        frames = fast.frames()
        cameras = [c.name for c in self.runtime.devices.cameras]
        if snap is None or snap.arm is None or cmd is None or any(c not in frames for c in cameras):
            return  # recording starts once the robot and every camera have been heard
        self.buffer.states.append(self.layout.vector(snap.arm, snap.base))
        self.buffer.actions.append(np.concatenate([cmd.base.as_array(), cmd.arm_positions]).astype(np.float32))
        for name in cameras:
            self.buffer.images.setdefault(name, []).append(frames[name].image)

    def _on_event(self, event: str) -> None:
        if event == "quit":
            log.info("quit: the unfinished episode is dropped")
            self.runtime.stop("recording_quit")
        elif self.phase == "recording" and event == "end":
            self._finish_episode()
        elif self.phase == "recording" and event == "rerecord":
            log.info("episode %d: recording again", self.saved)
            self._begin("recording")
        elif self.phase == "recording" and event == "discard":
            log.info("episode %d: discarded", self.saved)
            self._begin("reset")
        elif self.phase == "reset" and event == "end":
            self._begin("recording")

    def _begin(self, phase: str) -> None:
        self.phase, self.phase_ticks, self.buffer = phase, 0, EpisodeBuffer()
        if phase == "recording":
            log.info("episode %d of %d: recording (%s)", self.saved + 1, self.episodes, self.task)
        else:
            log.info("reset period: drive the scene back; nothing is recorded")

    def _finish_episode(self) -> None:
        if len(self.buffer):
            record = self.buffer.record(self.task)
            self.saving.append(self.saver.submit(self.save, record))
            self.saved += 1
            log.info("episode %d: %d frames, saving", self.saved, len(record.actions))
        if self.saved >= self.episodes:
            self.runtime.stop("recorded")
            self.phase = "done"
        else:
            self._begin("reset" if self.reset_ticks > 0 else "recording")

    def close(self) -> int:
        """Wait for the episodes being saved (a save that failed raises here); returns how many were saved."""
        self.saver.shutdown(wait=True)
        for future in self.saving:
            future.result()
        return self.saved
