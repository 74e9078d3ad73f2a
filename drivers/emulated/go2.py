"""An emulated Go2 on DDS: serves the sport RPC and publishes SportModeState_ as the robot does.

A participant on the configured interface (loopback in tests) reads rt/api/sport/request, answers on
rt/api/sport/response echoing the request's identity (3203 for APIs it does not implement, nothing for
noreply calls), and publishes rt/sportmodestate at `rate_hz` from a `Go2Body`. With a `World` it writes
the base pose into it. It also publishes its wireless remote on rt/wirelesscontroller with every state sample,
and at once when a test presses or releases keys (`press`, `release`).

Fault injection (set the attributes of `faults` at any time): stop answering, stop publishing, delay
replies, drop a fraction of requests and of state samples.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from drivers.emulated.go2_body import STANDING_HEIGHT_M, BodyLimits, Go2Body
from drivers.emulated.world import World
from drivers.unitree import sport_api as api
from drivers.unitree.dds_config import LOOPBACK_INTERFACE, Participant, queue_qos
from drivers.unitree.go2 import Go2Base
from drivers.unitree.idl import (
    Request_,
    Response_,
    ResponseHeader_,
    ResponseStatus_,
    SportModeState_,
    TimeSpec_,
    WirelessController_,
)
from drivers.unitree.remote import TOPIC_REMOTE, keys_mask

log = logging.getLogger("anchorvla.emulate.go2")

ANY_SAMPLE = SampleState.Any | ViewState.Any | InstanceState.Any


@dataclass
class Go2Faults:
    silent: bool = False  # receive requests (Move still acts) but send no replies
    no_state: bool = False  # stop publishing rt/sportmodestate
    reply_delay_s: float = 0.0
    drop_fraction: float = 0.0  # of incoming requests and outgoing state samples, at random


@dataclass(frozen=True)
class ReceivedRequest:
    request_id: int
    api_id: int
    received_ns: int  # time.monotonic_ns() when the listener took it
    code: int
    parameter: str = ""  # the request's JSON parameter (Move: {"x": .., "y": .., "z": ..})


class Go2Emulator:
    def __init__(
        self,
        interface: str = "lo",
        domain_id: int = 0,
        rate_hz: float = 100.0,
        initial_mode: int = api.MODE_LIE_DOWN,
        limits: BodyLimits | None = None,
        world: World | None = None,
        faults: Go2Faults | None = None,
        seed: int = 0,
    ):
        self.interface, self.domain_id = interface, domain_id
        self.period_s = 1.0 / rate_hz
        self.body = Go2Body(limits or BodyLimits(), mode=initial_mode, t_s=time.monotonic())
        if initial_mode not in (api.MODE_LIE_DOWN, api.MODE_DAMPING):
            self.body.body_height = STANDING_HEIGHT_M
        self.world = world
        self.faults = faults or Go2Faults()
        self.received: deque[ReceivedRequest] = deque(maxlen=100_000)
        self.states_published = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # guards body
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._participant: Participant | None = None
        self._delayed: list[tuple[float, int, Response_]] = []  # heap of (due monotonic s, seq, reply)
        self._delayed_seq = itertools.count()
        self._remote_keys = 0  # the remote's keys held down (WirelessController_.keys)
        self._remote_sticks = (0.0, 0.0, 0.0, 0.0)  # lx, ly, rx, ry

    # --- life cycle ---

    def start(self) -> None:
        self._participant = Participant(self.interface, self.domain_id)
        dp = self._participant.dp
        self._state_writer = DataWriter(dp, Topic(dp, api.TOPIC_STATE, SportModeState_))
        self._response_writer = DataWriter(dp, Topic(dp, api.TOPIC_RESPONSE, Response_))
        self._request_reader = DataReader(dp, Topic(dp, api.TOPIC_REQUEST, Request_), qos=queue_qos())
        self._remote_writer = DataWriter(dp, Topic(dp, TOPIC_REMOTE, WirelessController_))
        self._waitset = WaitSet(dp)
        self._waitset.attach(ReadCondition(self._request_reader, ANY_SAMPLE))
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve_loop, name="go2-emulator", daemon=True)
        self._thread.start()
        log.info(
            "emulated Go2 on interface '%s', DDS domain %d, state at %.0f Hz",
            self.interface,
            self.domain_id,
            1 / self.period_s,
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._participant is not None:
            self._participant.close()
            self._participant = None

    def __enter__(self) -> Go2Emulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve_loop(self) -> None:
        """One thread: wait for requests until the next state deadline (or delayed reply), serve, publish.

        No DDS listener: in one process Cyclone runs a listener in the writer's thread, and the Python
        binding writes holding the GIL, so two threads writing to a reader with a Python listener can
        deadlock. The waitset's wait releases the GIL.
        """
        next_state = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            wake = min([next_state, *(entry[0] for entry in self._delayed[:1])])
            if wake > now:
                self._waitset.wait(int((wake - now) * 1e9))
            for request in self._request_reader.take(64):
                if not isinstance(request, InvalidSample):
                    self._on_request(request, time.monotonic_ns())
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                self._response_writer.write(heapq.heappop(self._delayed)[2])
            if now >= next_state:
                self._publish_state(now)
                next_state += self.period_s
                if next_state < now:
                    next_state = now + self.period_s  # fell behind: do not burst

    # --- RPC ---

    def _on_request(self, request: Request_, now_ns: int) -> None:
        if self.faults.drop_fraction and self._rng.random() < self.faults.drop_fraction:
            return
        identity = request.header.identity
        data = ""
        try:
            params = json.loads(request.parameter) if request.parameter else {}
        except json.JSONDecodeError:
            params = None
        with self._lock:
            if not isinstance(params, dict):
                code = api.ERR_API_PARAMETER
            elif identity.api_id == api.API_VERSION:
                code, data = api.OK, json.dumps(api.SPORT_API_VERSION)
            else:
                code = self.body.request(identity.api_id, params, now_ns / 1e9)
        self.received.append(ReceivedRequest(identity.id, identity.api_id, now_ns, code, request.parameter))
        if request.header.policy.noreply or self.faults.silent:
            return
        response = Response_(ResponseHeader_(identity, ResponseStatus_(code)), data, [])
        if self.faults.reply_delay_s > 0:
            heapq.heappush(
                self._delayed, (now_ns / 1e9 + self.faults.reply_delay_s, next(self._delayed_seq), response)
            )
        else:
            self._response_writer.write(response)

    # --- state ---

    def _publish_state(self, now: float) -> None:
        with self._lock:
            self.body.step(now)
            sample = self._state_sample()
            pose = (self.body.x, self.body.y, self.body.yaw)
        if self.world is not None:
            self.world.set_base_pose(*pose)
        if self.faults.no_state or (
            self.faults.drop_fraction and self._rng.random() < self.faults.drop_fraction
        ):
            return
        self._state_writer.write(sample)
        self.states_published += 1
        self._publish_remote()

    # --- the wireless remote ---

    def press(self, *keys: str) -> None:
        """Hold `keys` down on the remote (names of drivers.unitree.remote.KEY_BITS), published at once."""
        self._remote_keys = keys_mask(*keys)
        self._publish_remote()

    def hold_sticks(self, lx: float = 0.0, ly: float = 0.0, rx: float = 0.0, ry: float = 0.0) -> None:
        """Hold the remote's sticks (-1..1, up and right positive), published at once and with every state."""
        self._remote_sticks = (lx, ly, rx, ry)
        self._publish_remote()

    def _publish_remote(self) -> None:
        lx, ly, rx, ry = self._remote_sticks
        self._remote_writer.write(WirelessController_(lx=lx, ly=ly, rx=rx, ry=ry, keys=self._remote_keys))

    def release(self) -> None:
        """Let go of every key, published at once."""
        self.press()

    def _state_sample(self) -> SportModeState_:
        b = self.body
        wall = time.time()
        sample = SportModeState_()
        sample.stamp = TimeSpec_(int(wall), int((wall % 1.0) * 1e9))
        sample.mode = b.mode
        sample.progress = b.progress
        sample.position = [b.x, b.y, b.body_height]
        sample.body_height = b.body_height
        sample.velocity = [float(b.velocity[0]), float(b.velocity[1]), 0.0]
        sample.yaw_speed = float(b.velocity[2])
        imu = sample.imu_state
        imu.rpy = [0.0, 0.0, b.yaw]
        imu.quaternion = [math.cos(b.yaw / 2), 0.0, 0.0, math.sin(b.yaw / 2)]
        imu.gyroscope = [0.0, 0.0, float(b.velocity[2])]
        imu.accelerometer = [0.0, 0.0, 9.81]
        imu.temperature = 40
        return sample

    # --- inspection (tests, benchmarks) ---

    def pose(self) -> tuple[float, float, float]:
        with self._lock:
            return self.body.x, self.body.y, self.body.yaw

    def mode(self) -> int:
        with self._lock:
            return self.body.mode


class Go2BaseWithEmulator(Go2Base):
    """The real Go2 client connected to an in-process emulated Go2 on loopback (config driver 'emulated').

    The emulator starts standing with its joints locked, so start-up runs the robot's path (BalanceStand);
    `stop()` ends the client, then the emulator.
    """

    def __init__(
        self, domain_id: int, world: World | None = None, emulator_rate_hz: float = 100.0, **options
    ):
        super().__init__(LOOPBACK_INTERFACE, domain_id, **options)
        self.emulator = Go2Emulator(
            LOOPBACK_INTERFACE,
            domain_id,
            rate_hz=emulator_rate_hz,
            initial_mode=api.MODE_JOINT_LOCK,
            world=world,
        )

    def start(self) -> None:
        self.emulator.start()
        try:
            super().start()
        except Exception:
            self.emulator.stop()
            raise

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.emulator.stop()


def cruising_sticks(t_s: float) -> tuple[float, float, float, float]:
    """An operator's remote script for the emulated Go2: forward at half stick, weaving left and right over a
    10 s cycle (lx, ly, rx, ry)."""
    return 0.0, 0.5, 0.4 * math.sin(2 * math.pi * t_s / 10.0), 0.0


class ScriptedRemote:
    """Holds the emulated Go2's remote sticks along `script` (t seconds -> lx, ly, rx, ry), 50 times a second."""

    def __init__(self, emulator: Go2Emulator, script=cruising_sticks):
        self.emulator, self.script = emulator, script
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._hold, name="scripted-remote", daemon=True)
        self._thread.start()

    def _hold(self) -> None:
        t0 = time.monotonic()
        while self._running.is_set():
            self.emulator.hold_sticks(*self.script(time.monotonic() - t0))
            time.sleep(0.02)

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()
