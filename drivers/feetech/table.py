"""The STS3215 control table as data, and the sign-magnitude encodings of its signed registers.

Addresses, sizes and units from the Feetech memory table (see /work/shared/FACTS.md). Multi-byte registers
are little-endian. Negative values are sign-magnitude: the register's `sign_bit` set, the magnitude below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

MODEL_STS3215 = 777
TICKS_PER_REV = 4096
RAD_PER_TICK = 2 * math.pi / TICKS_PER_REV
SPEED_UNIT_TICKS_S = 50.0  # Goal/Present speed: one unit is 50 ticks/s
ACCEL_UNIT_TICKS_S2 = 100.0  # Acceleration: one unit is 100 ticks/s^2
RETURN_DELAY_UNIT_S = 2e-6
BROADCAST_ID = 0xFE

# Baud_Rate register code -> bits per second.
BAUD_CODES: dict[int, int] = {
    0: 1_000_000,
    1: 500_000,
    2: 250_000,
    3: 128_000,
    4: 115_200,
    5: 76_800,
    6: 57_600,
    7: 38_400,
}

# Status byte / Status register bits.
ERROR_BITS: dict[int, str] = {
    1: "voltage",
    2: "angle sensor",
    4: "overheat",
    8: "over-current",
    32: "overload",
}


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int
    area: Literal["eeprom", "ram"]
    unit: str = ""
    sign_bit: int | None = None  # bit holding the sign (sign-magnitude), None if unsigned
    writable: bool = True
    default: int = 0  # factory value (the emulator starts with it)


_REGISTERS = (
    Register("Firmware_Major", 0, 1, "eeprom", writable=False, default=3),
    Register("Firmware_Minor", 1, 1, "eeprom", writable=False, default=10),
    Register("Model_Number", 3, 2, "eeprom", writable=False, default=MODEL_STS3215),
    Register("ID", 5, 1, "eeprom", default=1),
    Register("Baud_Rate", 6, 1, "eeprom", "code", default=0),
    Register("Return_Delay", 7, 1, "eeprom", "2 us", default=250),
    Register("Response_Status_Level", 8, 1, "eeprom", default=1),
    Register("Min_Position_Limit", 9, 2, "eeprom", "tick", default=0),
    Register("Max_Position_Limit", 11, 2, "eeprom", "tick", default=4095),
    Register("Max_Temperature_Limit", 13, 1, "eeprom", "C", default=70),
    Register("Max_Voltage_Limit", 14, 1, "eeprom", "0.1 V", default=140),
    Register("Min_Voltage_Limit", 15, 1, "eeprom", "0.1 V", default=40),
    Register("Max_Torque_Limit", 16, 2, "eeprom", "0.1 %", default=1000),
    Register("Phase", 18, 1, "eeprom", default=12),
    Register("Unloading_Condition", 19, 1, "eeprom", default=44),
    Register("LED_Alarm_Condition", 20, 1, "eeprom", default=47),
    Register("P_Coefficient", 21, 1, "eeprom", default=32),
    Register("D_Coefficient", 22, 1, "eeprom", default=32),
    Register("I_Coefficient", 23, 1, "eeprom", default=0),
    Register("Minimum_Startup_Force", 24, 2, "eeprom", "0.1 %", default=16),
    Register("CW_Dead_Zone", 26, 1, "eeprom", "tick", default=1),
    Register("CCW_Dead_Zone", 27, 1, "eeprom", "tick", default=1),
    Register("Protection_Current", 28, 2, "eeprom", "6.5 mA", default=500),
    Register("Angular_Resolution", 30, 1, "eeprom", default=1),
    Register("Homing_Offset", 31, 2, "eeprom", "tick", sign_bit=11, default=0),
    Register("Operating_Mode", 33, 1, "eeprom", default=0),
    Register("Protective_Torque", 34, 1, "eeprom", "%", default=20),
    Register("Protection_Time", 35, 1, "eeprom", "10 ms", default=200),
    Register("Overload_Torque", 36, 1, "eeprom", "%", default=80),
    Register("Velocity_P_Coefficient", 37, 1, "eeprom", default=10),
    Register("Over_Current_Protection_Time", 38, 1, "eeprom", "10 ms", default=200),
    Register("Velocity_I_Coefficient", 39, 1, "eeprom", default=200),
    Register("Torque_Enable", 40, 1, "ram", default=0),
    Register("Acceleration", 41, 1, "ram", "100 tick/s^2", default=0),
    Register("Goal_Position", 42, 2, "ram", "tick", sign_bit=15, default=0),
    Register("Goal_Time", 44, 2, "ram", "ms", default=0),
    Register("Goal_Velocity", 46, 2, "ram", "50 tick/s", sign_bit=15, default=0),
    Register("Torque_Limit", 48, 2, "ram", "0.1 %", default=1000),
    Register("Lock", 55, 1, "ram", default=1),
    Register("Present_Position", 56, 2, "ram", "tick", sign_bit=15, writable=False),
    Register("Present_Velocity", 58, 2, "ram", "50 tick/s", sign_bit=15, writable=False),
    Register("Present_Load", 60, 2, "ram", "0.1 %", sign_bit=10, writable=False),
    Register("Present_Voltage", 62, 1, "ram", "0.1 V", writable=False, default=120),
    Register("Present_Temperature", 63, 1, "ram", "C", writable=False, default=30),
    Register("Status", 65, 1, "ram", "bits", writable=False),
    Register("Moving", 66, 1, "ram", writable=False),
    Register("Present_Current", 69, 2, "ram", "6.5 mA", sign_bit=15, writable=False),
    Register("Maximum_Acceleration", 85, 1, "ram", "100 tick/s^2", default=254),
)

REGISTERS: dict[str, Register] = {r.name: r for r in _REGISTERS}
TABLE_SIZE = 86  # addresses 0..85; reads past it return zeros


def reg(name: str) -> Register:
    return REGISTERS[name]


def encode(value: int, register: Register) -> int:
    """Host integer -> raw register value (sign-magnitude where the register is signed)."""
    value = int(value)
    if register.sign_bit is None:
        if not 0 <= value < (1 << (8 * register.size)):
            raise ValueError(
                f"{register.name}: {value} out of range for an unsigned {register.size}-byte register"
            )
        return value
    magnitude = abs(value)
    if magnitude >= (1 << register.sign_bit):
        raise ValueError(f"{register.name}: |{value}| does not fit below sign bit {register.sign_bit}")
    return magnitude | (1 << register.sign_bit) if value < 0 else magnitude


def decode(raw: int, register: Register) -> int:
    """Raw register value -> host integer."""
    if register.sign_bit is None:
        return int(raw)
    magnitude = raw & ((1 << register.sign_bit) - 1)
    return -magnitude if raw & (1 << register.sign_bit) else magnitude


def to_bytes(raw: int, size: int) -> list[int]:
    return [(raw >> (8 * i)) & 0xFF for i in range(size)]


def from_bytes(data, size: int) -> int:
    return sum(int(data[i]) << (8 * i) for i in range(size))


def describe_errors(bits: int) -> str:
    names = [name for bit, name in ERROR_BITS.items() if bits & bit]
    return ", ".join(names) if names else "ok"
