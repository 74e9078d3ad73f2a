"""Units of the action and proprio channels, and LeRobot's SO-101 joint units converted to ours.

Ours are SI (docs/architecture.md): joints in rad, joint velocities in rad/s, positions in m, linear velocities
in m/s, yaw rates in rad/s. A dataset we write declares them per channel (`units` beside `names` in each feature).

LeRobot's SO-101 datasets name joints `shoulder_pan.pos` ... `gripper.pos` and store what its motor bus reports:
degrees about the middle of the calibrated range (`use_degrees=True`, lerobot >= 0.4's default) or the range mapped
to -100..100 (`use_degrees=False`), the gripper always 0..100 of its range. Converting goes through the servo ticks
with the arm's calibration (drivers/feetech/calibration.py, whose convention is LeRobot's):

    degrees   ticks - mid = v * 4095 / 360                      (LeRobot ignores drive_mode here)
    range     ticks - mid = v' / 200 * (range_max - range_min)  v' = -v where drive_mode is 1
    gripper   ticks - mid = (v' / 100 - 1/2) * (range_max - range_min)   v' = 100 - v where drive_mode is 1

then rad = ArmCalibration.ticks_to_rad(ticks). Only the gripper and `range` need the ranges; without the arm's
own calibration the URDF's range widths stand in (`default_calibration`), which the conversion note says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from anchorvla.errors import UserError
from drivers.feetech.calibration import ArmCalibration, default_calibration
from drivers.feetech.table import TICKS_PER_REV

SI_UNITS = ("rad", "rad/s", "m", "m/s")
_SUFFIX_UNITS = {
    "x": "m",
    "y": "m",
    "z": "m",
    "yaw": "rad",
    "vx": "m/s",
    "vy": "m/s",
    "vz": "m/s",
    "wz": "rad/s",
}
JointUnits = Literal["degrees", "range"]


def channel_unit(name: str) -> str:
    """The SI unit of one of our channel names (arm.<joint>, arm.<joint>.vel, base.vx, goal.x, ...)."""
    parts = name.split(".")
    if parts[0] == "arm" and len(parts) in (2, 3):
        return "rad/s" if parts[2:] == ["vel"] else "rad"
    if len(parts) == 2 and parts[1] in _SUFFIX_UNITS:
        return _SUFFIX_UNITS[parts[1]]
    raise UserError(
        f"channel {name!r}: no SI unit known for it (arm.<joint>[.vel], <thing>.x/y/z/yaw, <thing>.vx/vy/vz/wz)"
    )


@dataclass(frozen=True)
class LeRobotUnits:
    """How a LeRobot SO-101 dataset without declared units stores its joints, and the arm's calibration."""

    joints: JointUnits = "degrees"
    calibration: ArmCalibration | None = None


def to_si(
    feature: dict, values: np.ndarray, source: LeRobotUnits, what: str
) -> tuple[tuple[str, ...], np.ndarray, str | None]:
    """(our channel names, values in SI, a note on the conversion or None) for a stored vector feature."""
    names = _names(feature, what)
    units = feature.get("units")
    if units is not None:
        bad = [f"{n} [{u}]" for n, u in zip(names, units) if u not in SI_UNITS]
        if len(units) != len(names) or bad:
            raise UserError(
                f"{what}: units {bad or units} are not one SI unit per channel ({', '.join(SI_UNITS)})"
            )
        return names, values, None
    calibration = source.calibration or default_calibration()
    joints = {f"{j}.pos": k for k, j in enumerate(calibration.joint_names)}
    unknown = [n for n in names if n not in joints]
    if unknown:
        raise UserError(
            f"{what}: channels {unknown} declare no unit and are not SO-101 joint positions (shoulder_pan.pos ...); "
            "only those convert from LeRobot's units"
        )
    lo, hi = (np.array([j.range_min for j in calibration.joints.values()], float),
              np.array([j.range_max for j in calibration.joints.values()], float))  # fmt: skip
    flip = np.array([j.drive_mode == 1 for j in calibration.joints.values()])
    columns = [joints[n] for n in names]
    ticks = np.tile((lo + hi) / 2, (len(values), 1))
    for c, j in enumerate(columns):
        v = values[:, c]
        width = hi[j] - lo[j]
        if calibration.joint_names[j] == "gripper":
            offset = ((100 - v if flip[j] else v) / 100 - 0.5) * width
        elif source.joints == "degrees":
            offset = v * (TICKS_PER_REV - 1) / 360
        else:
            offset = (-v if flip[j] else v) / 200 * width
        ticks[:, j] += offset
    rad = calibration.ticks_to_rad(ticks)[:, columns]
    ours = tuple(f"arm.{calibration.joint_names[j]}" for j in columns)
    whose = (
        "the given calibration"
        if source.calibration is not None
        else "the URDF's ranges (no --calibration given)"
    )
    note = (
        f"{what}: SO-101 joints in LeRobot's {source.joints} (gripper 0..100) converted to rad with {whose}; "
        f"{'--lerobot-units range' if source.joints == 'degrees' else '--lerobot-units degrees'} if it was recorded "
        f"with use_degrees={source.joints != 'degrees'}"
    )
    return ours, rad, note


def _names(feature: dict, what: str) -> tuple[str, ...]:
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:  # older LeRobot datasets: {"motors": [...]}
        names = next(iter(names.values()))
    if not isinstance(names, list) or len(names) != int(feature["shape"][0]):
        raise UserError(f"{what}: its feature names {names!r} are not one name per channel")
    return tuple(str(n) for n in names)
