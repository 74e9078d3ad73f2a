"""Devices with fault injection, for the fault scenarios (`anchorvla bench faults`).

A rig is the devices a scenario runs the Runtime against, plus a `FaultInjector` that breaks them on cue.
`DeviceFactory` builds one from a config; the scenario runner takes the factory as its one device parameter.
`standin_rig` wraps the in-memory stand-ins (onboard/standins.py); a rig over the protocol emulators (pty
servo bus, DDS Go2) implements the same injector over the emulated world.

The stand-in wrappers model what the real links do: a silent servo bus raises on read/write ("no status
packet"); an unplugged servo adapter raises LinkLost (the emulated rig closes the pty itself); servo health
fields come from the (emulated) control table; a Go2 that stops answering leaves its last state in the DDS
reader (it goes stale, nothing raises), drops Move silently (noreply), and a sport RPC such as StopMove blocks
for its whole timeout before failing with 3104. `wire_moves` says when Move requests reached the base: the
emulated Go2's DDS reader, or the stand-in's own call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from anchorvla.errors import DeviceError, LinkLost
from drivers.types import ArmState, BaseState
from drivers.unitree import sport_api as api
from onboard.config import Config
from onboard.runtime import Devices
from onboard.standins import StandinArm, StandinBase, StandinCamera


class FaultInjector(Protocol):
    def servo_timeout(self) -> None:
        """The servo bus stops answering."""

    def overheat(self, joint: str, temperature_c: float) -> None: ...

    def overload(self, joint: str, load: float) -> None: ...

    def stall(self, joint: str) -> None:
        """The joint is blocked where it is (an obstacle): it stops moving whatever its goal."""

    def voltage_sag(self, volts: float) -> None: ...

    def base_silent(self) -> None:
        """The base stops answering: state goes stale, commands are lost."""

    def camera_stall(self, camera: str) -> None:
        """The camera delivers no new frames."""

    def adapter_unplugged(self) -> None:
        """The servo adapter is pulled out."""

    def camera_unplugged(self, camera: str) -> None:
        """The camera's device goes away: its driver's latest() raises."""

    def wire_moves(self, since_ns: int) -> list[int]:
        """When Move requests reached the base (its side of the link), at or after `since_ns`."""


@dataclass
class Rig:
    devices: Devices
    faults: FaultInjector


DeviceFactory = Callable[[Config], Rig]


class FaultyStandinArm:
    """A stand-in arm with servo health fields (healthy by default) and injectable faults."""

    def __init__(self, inner: StandinArm):
        self.inner = inner
        self.joint_names = inner.joint_names
        n = len(inner.joint_names)
        self.temperatures_c = np.full(n, 35.0)
        self.voltages_v = np.full(n, 12.0)
        self.extra_load = np.zeros(n)
        self.error_bits = np.zeros(n, dtype=np.int64)
        self.frozen: dict[int, float] = {}
        self.unplugged = False
        self._goal: np.ndarray | None = None

    def start(self) -> None:
        self.inner.start()

    def _link(self) -> None:
        if self.unplugged:
            raise LinkLost("stand-in arm: serial link failed: adapter unplugged")

    def read_state(self) -> ArmState:
        self._link()
        s = self.inner.read_state()
        pos, vel = s.positions.copy(), s.velocities.copy()
        for i, p in self.frozen.items():
            pos[i], vel[i] = p, 0.0
        goal = self._goal if self._goal is not None else pos
        # A position servo's load grows with its tracking error (saturating at full torque).
        loads = np.clip(2.0 * (goal - pos), -1.0, 1.0) + self.extra_load
        return replace(
            s,
            positions=pos,
            velocities=vel,
            loads=np.clip(loads, -1.0, 1.0),
            temperatures_c=self.temperatures_c.copy(),
            voltages_v=self.voltages_v.copy(),
            error_bits=self.error_bits.copy(),
            health_t_ns=s.t_ns,
        )

    def write_goal(self, positions: np.ndarray) -> None:
        self._link()
        self.inner.write_goal(positions)
        self._goal = np.asarray(positions, dtype=np.float64).copy()

    def release_torque(self) -> None:
        self._link()
        self.inner.release_torque()

    def stop(self) -> None:
        self.inner.stop()


class FaultyStandinBase:
    """A stand-in base that can stop answering the way a Go2 over DDS does."""

    def __init__(self, inner: StandinBase, rpc_timeout_s: float = 0.5):
        self.inner = inner
        self.rpc_timeout_s = rpc_timeout_s
        self.silent = False
        self.move_times: list[int] = []  # when each Move that went through was taken
        self._last: BaseState | None = None

    def start(self) -> None:
        self.inner.start()

    def read_state(self) -> BaseState:
        if self.silent and self._last is not None:
            return self._last  # the DDS reader keeps the last sample; its stamp ages
        self._last = self.inner.read_state()
        return self._last

    def move(self, vx: float, vy: float, wz: float) -> None:
        if not self.silent:  # Move is sent with noreply: a lost one raises nothing
            self.move_times.append(time.monotonic_ns())
            self.inner.move(vx, vy, wz)

    def _rpc(self, call: Callable[[], None], name: str) -> None:
        if self.silent:
            time.sleep(self.rpc_timeout_s)
            raise DeviceError(f"Go2 {name}: no reply within {self.rpc_timeout_s:.1f} s (code 3104)")
        call()

    def stop_move(self) -> None:
        self._rpc(self.inner.stop_move, "StopMove")

    def damp(self) -> None:
        self._rpc(self.inner.damp, "Damp")

    def stop(self) -> None:
        self.inner.stop()


class StandinFaults:
    def __init__(self, arm: FaultyStandinArm, base: FaultyStandinBase, cameras: list[StandinCamera]):
        self.arm, self.base, self.cameras = arm, base, {c.name: c for c in cameras}

    def _index(self, joint: str) -> int:
        return self.arm.joint_names.index(joint)

    def servo_timeout(self) -> None:
        self.arm.inner.silent = True

    def overheat(self, joint: str, temperature_c: float) -> None:
        self.arm.temperatures_c[self._index(joint)] = temperature_c

    def overload(self, joint: str, load: float) -> None:
        self.arm.extra_load[self._index(joint)] = load

    def stall(self, joint: str) -> None:
        i = self._index(joint)
        self.arm.frozen[i] = float(self.arm.inner.read_state().positions[i])

    def voltage_sag(self, volts: float) -> None:
        self.arm.voltages_v[:] = volts

    def base_silent(self) -> None:
        self.base.silent = True

    def camera_stall(self, camera: str) -> None:
        self.cameras[camera].stalled_at_ns = time.monotonic_ns()

    def adapter_unplugged(self) -> None:
        self.arm.unplugged = True

    def camera_unplugged(self, camera: str) -> None:
        self.cameras[camera].unplugged = True

    def wire_moves(self, since_ns: int) -> list[int]:
        return [t for t in self.base.move_times if t >= since_ns]


def standin_rig(config: Config) -> Rig:
    """The in-memory stand-ins with fault injection."""
    arm = FaultyStandinArm(StandinArm(tuple(config.robot.arm.joint_names)))
    base = FaultyStandinBase(StandinBase())
    cameras = [StandinCamera(c.name, c.width, c.height, c.fps) for c in config.robot.cameras]
    return Rig(Devices(arm, base, list(cameras)), StandinFaults(arm, base, cameras))


class EmulatedFaults:
    """Faults injected into the protocol emulators: the STS3215 bus on a pty and the Go2 on DDS (loopback)."""

    def __init__(self, arm, base, cameras: list[StandinCamera]):
        self.arm, self.base, self.cameras = arm, base, {c.name: c for c in cameras}

    def _servo(self, joint: str):
        servo_id = self.arm.calibration.ids[self.arm.joint_names.index(joint)]
        return self.arm.emulator.servo(servo_id)

    def servo_timeout(self) -> None:
        for servo in self.arm.emulator.servos:
            servo.faults.silent = True

    def overheat(self, joint: str, temperature_c: float) -> None:
        self._servo(joint).temperature = temperature_c

    def overload(self, joint: str, load: float) -> None:
        self._servo(joint).faults.external_load = load

    def stall(self, joint: str) -> None:
        self._servo(joint).faults.stalled = True

    def voltage_sag(self, volts: float) -> None:
        for servo in self.arm.emulator.servos:
            servo.faults.voltage_v = volts

    def base_silent(self) -> None:
        self.base.emulator.faults.silent = True
        self.base.emulator.faults.no_state = True

    def camera_stall(self, camera: str) -> None:
        self.cameras[camera].stalled_at_ns = time.monotonic_ns()

    def adapter_unplugged(self) -> None:
        self.arm.emulator.close()  # the pty goes: the driver's next flush, read or write fails with EIO

    def camera_unplugged(self, camera: str) -> None:
        self.cameras[camera].unplugged = True

    def wire_moves(self, since_ns: int) -> list[int]:
        received = list(self.base.emulator.received)
        return [r.received_ns for r in received if r.api_id == api.MOVE and r.received_ns >= since_ns]


_domain = {"next": 180}


def emulated_rig(config: Config) -> Rig:
    """The real SO-101 driver on an emulated servo bus (pty) and the real Go2 client with an emulated Go2 on
    DDS over loopback (a fresh domain id per rig); cameras are stand-ins. Health is read every tick."""
    from onboard.devices import build_arm, build_base

    _domain["next"] += 1
    robot = config.robot.model_copy(
        update={
            "arm": config.robot.arm.model_copy(
                update={"driver": "emulated", "health_period_s": 1.0 / config.control.rate_hz}
            ),
            "base": config.robot.base.model_copy(update={"driver": "emulated", "domain_id": _domain["next"]}),
        }
    )
    emulated = config.model_copy(update={"robot": robot})
    arm, base = build_arm(emulated), build_base(emulated)
    cameras = [StandinCamera(c.name, c.width, c.height, c.fps) for c in config.robot.cameras]
    return Rig(Devices(arm, base, list(cameras)), EmulatedFaults(arm, base, cameras))


FACTORIES: dict[str, DeviceFactory] = {"standin": standin_rig, "emulated": emulated_rig}
