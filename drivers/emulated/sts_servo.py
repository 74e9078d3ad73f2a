"""One emulated STS3215: the full control table in memory, position following with speed and acceleration
limits, load from tracking error, temperature from load, the protections' error bits, and fault injection.

Memory holds raw register bytes exactly as on the wire; `drivers.feetech.table` says what they mean.
Physics advances lazily (`advance(now)`), in steps of at most 1 ms, whenever the bus touches the servo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drivers.feetech.table import (
    ACCEL_UNIT_TICKS_S2,
    REGISTERS,
    SPEED_UNIT_TICKS_S,
    TABLE_SIZE,
    TICKS_PER_REV,
    Register,
    decode,
    encode,
    from_bytes,
    to_bytes,
)

MAX_SPEED_TICKS_S = 3400.0  # about 50 rpm, the 12 V STS3215 at no load
MAX_ACCEL_TICKS_S2 = 50_000.0  # Acceleration 0 means "as fast as the motor can"
AMBIENT_C = 25.0
RESTED_C = AMBIENT_C + 5.0  # a powered servo at rest settles a little above ambient


@dataclass
class ServoFaults:
    """What to break. Probabilities are per reply; `silent` stops all answers."""

    drop_reply: float = 0.0
    corrupt_checksum: float = 0.0
    delay_s: float = 0.0
    silent: bool = False
    error_bits: int = 0  # forced into every status byte
    stalled: bool = False  # the horn is blocked: position stays, load and heat rise
    voltage_v: float | None = None  # supply sag (None: nominal)
    external_load: float = 0.0  # a payload or obstacle the servo must hold against, fraction of max torque (signed)
    # Compliance: ticks the horn yields at full external load; a soft servo settles at goal + compliance_ticks *
    # external_load (external_load signed in the direction of increasing ticks, e.g. gravity on a loaded arm).
    compliance_ticks: float = 0.0
    dropped: int = 0  # replies dropped so far (counted here so tests can compare)
    corrupted: int = 0


_BY_ADDRESS: dict[int, Register] = {}
for _r in REGISTERS.values():
    for _a in range(_r.address, _r.address + _r.size):
        _BY_ADDRESS[_a] = _r


class EmulatedServo:
    def __init__(
        self,
        servo_id: int,
        actual_ticks: float = 2048.0,
        model_number: int | None = None,
        nominal_voltage_v: float = 12.0,
    ):
        self.mem = bytearray(TABLE_SIZE)
        for r in REGISTERS.values():
            self._put(r, encode(r.default, r))
        self._put(REGISTERS["ID"], servo_id)
        if model_number is not None:
            self._put(REGISTERS["Model_Number"], model_number)
        self.actual = float(actual_ticks)  # encoder position before Homing_Offset, ticks
        self.velocity = 0.0  # ticks/s
        self.temperature = RESTED_C
        self.nominal_voltage_v = nominal_voltage_v
        self.overload_s = 0.0  # time spent above Overload_Torque
        self.latched_errors = 0
        self.faults = ServoFaults()
        self.pending: tuple[int, bytes] | None = None  # REG_WRITE awaiting ACTION
        self.eeprom_writes = (
            0  # bytes written to EEPROM over the bus (flash wears: start-up should write none)
        )
        self._t: float | None = None
        self.load = 0.0  # 0.1 % of max torque, signed
        self.set_value("Goal_Position", self.present_ticks())  # at power-up the goal is where the horn is

    # -- registers -------------------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.mem[REGISTERS["ID"].address]

    def _put(self, r: Register, raw: int) -> None:
        self.mem[r.address : r.address + r.size] = bytes(to_bytes(raw, r.size))

    def _raw(self, r: Register) -> int:
        return from_bytes(self.mem[r.address : r.address + r.size], r.size)

    def value(self, name: str) -> int:
        r = REGISTERS[name]
        return decode(self._raw(r), r)

    def set_value(self, name: str, value: int) -> None:
        """Set a register directly (the test's hand, not the bus: no lock or read-only checks)."""
        self._put(REGISTERS[name], encode(value, REGISTERS[name]))

    def read(self, address: int, length: int) -> bytes:
        end = min(address + length, TABLE_SIZE)
        data = bytes(self.mem[address:end]) if address < TABLE_SIZE else b""
        return data + bytes(length - len(data))

    def write(self, address: int, data: bytes) -> None:
        """A WRITE from the bus: read-only registers ignore it, EEPROM ignores it while Lock is set."""
        locked = self.value("Lock") != 0
        goal_touched = torque_touched = False
        for i, byte in enumerate(data):
            r = _BY_ADDRESS.get(address + i)
            if r is None or not r.writable or (r.area == "eeprom" and locked):
                continue
            self.mem[address + i] = byte
            self.eeprom_writes += r.area == "eeprom"
            goal_touched |= r.name == "Goal_Position"
            torque_touched |= r.name == "Torque_Enable"
        if torque_touched and self.value("Torque_Enable") == 1:
            self.latched_errors = 0  # re-enabling torque clears a protection trip
            self.overload_s = 0.0
        if goal_touched:
            lo, hi = self.value("Min_Position_Limit"), self.value("Max_Position_Limit")
            if lo or hi:
                goal = min(max(self.value("Goal_Position"), lo), hi)
                self.set_value("Goal_Position", goal)

    # -- physics ---------------------------------------------------------------------------------------
    def present_ticks(self) -> int:
        return int(round(self.actual - self.value("Homing_Offset"))) % TICKS_PER_REV

    def move_by_hand(self, present_ticks: float) -> None:
        """Put the horn at a present position (a person moving a limp joint)."""
        self.actual = float(present_ticks) + self.value("Homing_Offset")
        self.velocity = 0.0
        if self.value("Torque_Enable") != 1:
            self.set_value("Goal_Position", self.present_ticks())

    def rest(self) -> None:
        """Cool down as after a pause long enough to settle: back at the rested temperature, no overload time."""
        self.temperature = RESTED_C
        self.overload_s = 0.0

    def error_bits(self) -> int:
        bits = self.latched_errors | self.faults.error_bits
        volts = self.voltage_v()
        if not self.value("Min_Voltage_Limit") <= volts * 10 <= self.value("Max_Voltage_Limit"):
            bits |= 1
        return bits

    def voltage_v(self) -> float:
        return self.faults.voltage_v if self.faults.voltage_v is not None else self.nominal_voltage_v

    def advance(self, now: float) -> None:
        if self._t is None:
            self._t = now
        remaining = now - self._t
        self._t = now
        while remaining > 0:
            h = min(remaining, 1e-3) if self._in_motion() else remaining
            self._step(h)
            remaining -= h
        self._publish()

    def _target(self) -> float:
        """Where the horn settles under torque: the goal, yielded by the compliance under the external load."""
        goal = self.value("Goal_Position") + self.value("Homing_Offset")
        return goal + self.faults.compliance_ticks * self.faults.external_load

    def _in_motion(self) -> bool:
        if self.value("Torque_Enable") != 1 or self.latched_errors:
            return False
        target = self._target()
        return self.velocity != 0.0 or self.actual != target or self.overload_s > 0

    def _step(self, h: float) -> None:
        torque_on = self.value("Torque_Enable") == 1 and not self.latched_errors
        error = 0.0
        if torque_on:
            target = self._target()
            error = target - self.actual
            vmax = abs(self.value("Goal_Velocity")) * SPEED_UNIT_TICKS_S or MAX_SPEED_TICKS_S
            amax = self.value("Acceleration") * ACCEL_UNIT_TICKS_S2 or MAX_ACCEL_TICKS_S2
            desired = math.copysign(min(vmax, math.sqrt(2 * amax * abs(error))), error)
            dv = max(-amax * h, min(amax * h, desired - self.velocity))
            self.velocity = 0.0 if self.faults.stalled else self.velocity + dv
            self.actual += self.velocity * h
            if abs(target - self.actual) < 0.5 and abs(self.velocity) < amax * h:
                self.actual, self.velocity = float(target), 0.0
            error = target - self.actual
        else:
            self.velocity = 0.0
        # Load: the P loop's effort on the tracking error plus any external load, capped by the torque limit.
        cap = min(self.value("Torque_Limit"), self.value("Max_Torque_Limit"))
        effort = error * self.value("P_Coefficient") * 0.5 + self.faults.external_load * 1000.0
        self.load = max(-cap, min(cap, effort)) if torque_on else 0.0
        # Heat from load, cooling towards ambient.
        frac = abs(self.load) / 1000.0
        self.temperature += h * (4.0 * frac * frac - (self.temperature - AMBIENT_C) / 300.0)
        if self.temperature > self.value("Max_Temperature_Limit"):
            self.latched_errors |= 4
        if abs(self.load) > self.value("Overload_Torque") * 10:
            self.overload_s += h
            if self.overload_s > self.value("Protection_Time") * 0.01:
                self.latched_errors |= 32
        else:
            self.overload_s = 0.0

    def _publish(self) -> None:
        """Mirror the physical state into the Present_* registers."""
        self.set_value("Present_Position", self.present_ticks())
        speed = int(round(self.velocity / SPEED_UNIT_TICKS_S))
        self.set_value("Present_Velocity", max(-32767, min(32767, speed)))
        self.set_value("Present_Load", int(round(max(-1000, min(1000, self.load)))))
        self.set_value("Present_Voltage", int(round(self.voltage_v() * 10)))
        self.set_value("Present_Temperature", int(round(self.temperature)))
        self.set_value("Status", self.error_bits())
        moving = abs(self.velocity) > 1.0
        self.set_value("Moving", 1 if moving else 0)
        self.set_value("Present_Current", int(round(self.load * 2000 / 1000 / 6.5)))
