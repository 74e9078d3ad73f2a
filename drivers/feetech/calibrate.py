"""Calibrating an SO-101: half-turn homing at mid-range, then the range each joint travels by hand.

The steps are functions over a `FeetechBus` so tests drive them against the emulator; the command in
`anchorvla/commands/calibrate.py` adds the prompts and the live table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from drivers.feetech.bus import FeetechBus
from drivers.feetech.calibration import ArmCalibration, JointCalibration, half_turn_homing_offset
from drivers.feetech.table import TICKS_PER_REV, decode, from_bytes, reg

_POS = reg("Present_Position")


def release(bus: FeetechBus, ids: tuple[int, ...]) -> None:
    """Torque off and EEPROM unlocked: the joints move by hand and can be written."""
    for i in ids:
        bus.write(i, "Torque_Enable", 0)
        bus.write(i, "Lock", 0)


def read_positions(bus: FeetechBus, ids: tuple[int, ...]) -> dict[int, int]:
    data = bus.sync_read(_POS.address, _POS.size, ids, "position read")
    return {i: decode(from_bytes(data[i], 2), _POS) for i in ids}


def set_half_turn_homing(bus: FeetechBus, ids: tuple[int, ...]) -> dict[int, int]:
    """With the arm held at mid-range: Homing_Offset so that every joint reads 2047 there. Returns the offsets."""
    for i in ids:
        bus.write(i, "Homing_Offset", 0)
        # Min/Max limits stop the goal, not the reading; open them so the range can be recorded.
        bus.write(i, "Min_Position_Limit", 0)
        bus.write(i, "Max_Position_Limit", TICKS_PER_REV - 1)
    actual = read_positions(bus, ids)
    offsets = {i: half_turn_homing_offset(actual[i]) for i in ids}
    for i, offset in offsets.items():
        bus.write(i, "Homing_Offset", offset)
    return offsets


def record_ranges(
    bus: FeetechBus,
    ids: tuple[int, ...],
    stop: threading.Event,
    on_update: Callable[[dict[int, int], dict[int, int], dict[int, int]], None] | None = None,
    period_s: float = 0.05,
) -> tuple[dict[int, int], dict[int, int]]:
    """Track each joint's min and max position until `stop` is set. Returns (mins, maxes)."""
    positions = read_positions(bus, ids)
    mins, maxes = dict(positions), dict(positions)
    while not stop.wait(period_s):
        positions = read_positions(bus, ids)
        for i, p in positions.items():
            mins[i], maxes[i] = min(mins[i], p), max(maxes[i], p)
        if on_update is not None:
            on_update(mins, positions, maxes)
    return mins, maxes


def write_calibration(bus: FeetechBus, calibration: ArmCalibration) -> None:
    """Homing offsets and position limits into EEPROM, then locked."""
    for j in calibration.joints.values():
        bus.write(j.id, "Lock", 0)
        bus.write(j.id, "Homing_Offset", j.homing_offset)
        bus.write(j.id, "Min_Position_Limit", j.range_min)
        bus.write(j.id, "Max_Position_Limit", j.range_max)
        bus.write(j.id, "Lock", 1)


def build_calibration(
    joint_names: tuple[str, ...],
    ids: tuple[int, ...],
    offsets: dict[int, int],
    mins: dict[int, int],
    maxes: dict[int, int],
) -> ArmCalibration:
    from anchorvla.errors import UserError

    joints = {}
    for name, i in zip(joint_names, ids, strict=True):
        if maxes[i] - mins[i] < 20:
            raise UserError(
                f"{name} (id {i}) moved only {maxes[i] - mins[i]} ticks: move every joint through its full range"
            )
        joints[name] = JointCalibration(
            id=i, drive_mode=0, homing_offset=offsets[i], range_min=mins[i], range_max=maxes[i]
        )
    return ArmCalibration(joints)
