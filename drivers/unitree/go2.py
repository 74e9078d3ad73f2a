"""The Go2 `Base` driver: sport RPC + rt/sportmodestate on one DDS participant.

Start-up waits for the state topic (bounded), checks the mode and brings the robot into balance stand
(BalanceStand when it stands locked; StandUp first only when `stand_up_on_start`). On the fast loop,
`move()` is a noreply write and `read_state()` takes what the state reader holds without waiting (no
listener threads: see sport_client): neither waits for the robot. `read_state()` first takes the remote's samples
(rt/wirelesscontroller) and calls `remote_listeners` with each combination pressed (drivers/unitree/remote.py),
so the fast loop acts on it in the same tick. `read_state()` raises DeviceError when the newest sample is older than `max_state_age_s`,
which the runtime reports to the safety layer as fault "base_comms".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
from cyclonedds.internal import InvalidSample
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from anchorvla.errors import DeviceError
from drivers.types import BaseState, Sticks
from drivers.unitree import sport_api as api
from drivers.unitree.dds_config import Participant, queue_qos
from drivers.unitree.idl import SportModeState_, WirelessController_
from drivers.unitree.remote import TOPIC_REMOTE, RemoteDecoder, held
from drivers.unitree.sport_client import SportClient

log = logging.getLogger("anchorvla.go2")


def state_to_base_state(sample: SportModeState_, t_ns: int) -> BaseState:
    """A SportModeState_ as a BaseState stamped `t_ns` (our monotonic clock at receipt)."""
    imu = sample.imu_state
    return BaseState(
        t_ns=t_ns,
        position=np.array(sample.position, dtype=np.float64),
        yaw=float(imu.rpy[2]),
        velocity=np.array(sample.velocity, dtype=np.float64),
        yaw_speed=float(sample.yaw_speed),
        mode=int(sample.mode),
        rpy=np.array(imu.rpy, dtype=np.float64),
        error_code=int(sample.error_code),
    )


class Go2Base:
    """Implements `drivers.protocols.Base` for a Go2 reachable over DDS on `interface`, `domain_id`."""

    def __init__(
        self,
        interface: str,
        domain_id: int,
        state_timeout_s: float = 2.0,
        max_state_age_s: float = 0.1,
        rpc_timeout_s: float = 0.5,
        mode_timeout_s: float = 3.0,
        stand_up_on_start: bool = False,
    ):
        self.interface, self.domain_id = interface, domain_id
        self.where = f"interface '{interface}', DDS domain {domain_id}"
        self.state_timeout_s = state_timeout_s
        self.max_state_age_ns = int(max_state_age_s * 1e9)
        self.rpc_timeout_s = rpc_timeout_s
        self.mode_timeout_s = mode_timeout_s
        self.stand_up_on_start = stand_up_on_start
        self._participant: Participant | None = None
        self._state_reader: DataReader | None = None
        self._remote_reader: DataReader | None = None
        self._remote = RemoteDecoder()
        self.remote_listeners: list[Callable[[str], None]] = []  # called with each combination pressed
        self._sticks = Sticks(0)  # the remote as last heard (teleoperation reads it: `remote_sticks`)
        self.client: SportClient | None = None
        self._latest: tuple[int, SportModeState_] | None = None  # (receipt monotonic ns, sample)

    # --- connection ---

    def _take_state(self) -> tuple[int, SportModeState_] | None:
        """Take the samples that arrived (non-blocking); the newest one is stamped with the time it was taken."""
        if self._state_reader is None:
            return self._latest
        samples = [s for s in self._state_reader.take(64) if not isinstance(s, InvalidSample)]
        if samples:
            self._latest = (time.monotonic_ns(), samples[-1])
        return self._latest

    def connect(self) -> None:
        """Open the participant, the state reader and the RPC client; wait for the first state sample."""
        self._participant = Participant(self.interface, self.domain_id)
        dp = self._participant.dp
        self._state_reader = DataReader(dp, Topic(dp, api.TOPIC_STATE, SportModeState_))
        # Keep every remote sample between two ticks: a short press must not be lost to keep-last 1.
        self._remote_reader = DataReader(dp, Topic(dp, TOPIC_REMOTE, WirelessController_), qos=queue_qos())
        self.client = SportClient(self._participant, self.where)
        end = time.monotonic() + self.state_timeout_s
        while self._take_state() is None and time.monotonic() < end:
            time.sleep(0.002)
        if self._latest is None:
            self.stop()
            raise DeviceError(
                f"no Go2 state on {api.TOPIC_STATE} within {self.state_timeout_s:g} s on {self.where}: "
                "is the robot on, the cable in, and robot.base.interface / domain_id right?"
            )
        if not self.client.wait_ready(self.rpc_timeout_s):
            self.stop()
            raise DeviceError(
                f"Go2 sport service does not answer on {api.TOPIC_REQUEST} within {self.rpc_timeout_s:g} s on {self.where}"
            )

    def start(self) -> None:
        """Connect, then bring the robot into balance stand so Move takes effect."""
        self.connect()
        mode = self.mode()
        if mode in api.MOVABLE_MODES:
            return
        if mode in (api.MODE_LIE_DOWN, api.MODE_DAMPING):
            if not self.stand_up_on_start:
                raise DeviceError(
                    f"Go2 is in {api.mode_name(mode)}: stand it up (remote) or set robot.base.stand_up_on_start"
                )
            self.stand_up()
            mode = self.mode()
        if mode in (api.MODE_JOINT_LOCK, api.MODE_IDLE):
            self.balance_stand()
            return
        raise DeviceError(
            f"Go2 is in {api.mode_name(mode)}; bring it to a stand before starting the controller"
        )

    def _rpc(self, api_id: int, parameter: str = "{}") -> None:
        self._require_client().call_ok(api_id, parameter, self.rpc_timeout_s)

    def _require_client(self) -> SportClient:
        if self.client is None:
            raise DeviceError(f"Go2 on {self.where} is not connected (start() first)")
        return self.client

    def wait_mode(self, modes: tuple[int, ...], timeout_s: float) -> int:
        """Wait (polling the newest state) until the mode is one of `modes`; DeviceError on timeout."""
        end = time.monotonic() + timeout_s
        while True:
            mode = self.mode()
            if mode in modes:
                return mode
            if time.monotonic() >= end:
                wanted = " or ".join(api.mode_name(m) for m in modes)
                raise DeviceError(
                    f"Go2 stayed in {api.mode_name(mode)} for {timeout_s:g} s, expected {wanted}"
                )
            time.sleep(0.005)

    def mode(self) -> int:
        if self._take_state() is None:
            raise DeviceError(f"no Go2 state received on {self.where}")
        return int(self._latest[1].mode)

    # --- the sport API (start-up and shutdown; each waits at most rpc_timeout_s for the reply) ---

    def stand_up(self) -> None:
        self._rpc(api.STAND_UP)
        self.wait_mode((api.MODE_JOINT_LOCK,), self.mode_timeout_s)

    def balance_stand(self) -> None:
        self._rpc(api.BALANCE_STAND)
        self.wait_mode(api.MOVABLE_MODES, self.mode_timeout_s)

    def stand_down(self) -> None:
        self._rpc(api.STAND_DOWN)
        self.wait_mode((api.MODE_LIE_DOWN,), self.mode_timeout_s)

    def recovery_stand(self) -> None:
        self._rpc(api.RECOVERY_STAND)

    def damp(self) -> None:
        self._rpc(api.DAMP)

    def speed_level(self, level: int) -> None:
        if level not in (-1, 0, 1):
            raise DeviceError(f"Go2 SpeedLevel must be -1 (slow), 0 (normal) or 1 (fast), got {level}")
        self._rpc(api.SPEED_LEVEL, f'{{"data": {level}}}')

    # --- the Base protocol ---

    def take_remote(self) -> None:
        """Take the remote's samples that arrived (non-blocking) and tell `remote_listeners` of each press."""
        if self._remote_reader is None:
            return
        for sample in self._remote_reader.take(64):
            if isinstance(sample, InvalidSample):
                continue
            self._sticks = Sticks(
                time.monotonic_ns(), sample.lx, sample.ly, sample.rx, sample.ry, held(int(sample.keys))
            )
            for press in self._remote.presses(int(sample.keys)):
                for listener in self.remote_listeners:
                    listener(press)

    def remote_sticks(self) -> Sticks:
        """The remote's sticks and keys as last heard (centred, nothing held, before the first sample)."""
        return self._sticks

    def read_state(self) -> BaseState:
        self.take_remote()  # before the age check: a press counts even when the state is late
        latest = self._take_state()
        if latest is None:
            raise DeviceError(f"no Go2 state received on {self.where}")
        t_ns, sample = latest
        age_ns = time.monotonic_ns() - t_ns
        if age_ns > self.max_state_age_ns:
            raise DeviceError(
                f"Go2 state is {age_ns / 1e9:.3f} s old (limit {self.max_state_age_ns / 1e9:g} s) on {self.where}"
            )
        return state_to_base_state(sample, t_ns)

    def state_age_s(self) -> float:
        """Seconds since a new state sample was last taken (inf before the first)."""
        latest = self._take_state()
        return math.inf if latest is None else (time.monotonic_ns() - latest[0]) / 1e9

    def move(self, vx: float, vy: float, wz: float) -> None:
        self._require_client().move(vx, vy, wz)

    def stop_move(self) -> None:
        """Move(0,0,0), then StopMove. Bounded by rpc_timeout_s; DeviceError when the robot does not answer
        (the zero Move was sent; the robot also ends any Move by itself about 1 s after the last one)."""
        client = self._require_client()
        client.move(0.0, 0.0, 0.0)
        client.call_ok(api.STOP_MOVE, "{}", self.rpc_timeout_s)

    def stop(self) -> None:
        """Close the participant (readers, writer). Leaves the robot as it is."""
        if self._participant is not None:
            self._participant.close()
            self._participant = None
            self._state_reader = None
            self._remote_reader = None
            self.client = None
