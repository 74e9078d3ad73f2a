"""Per-arm calibration: which servo drives which joint, its homing offset and its range, and ticks <-> rad.

Convention (the same as LeRobot's, so its files import as they are): a joint's zero is the middle of its
recorded range, `rad = sign * (ticks - mid) * 2*pi/4096` with `mid = (range_min + range_max) / 2` and
`sign = -1` where `drive_mode` is 1. Ticks are Present_Position values (after the servo's Homing_Offset).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anchorvla.errors import UserError
from drivers.feetech.table import RAD_PER_TICK, TICKS_PER_REV
from drivers.types import SO101_JOINTS

FORMAT = "anchorvla-so101-calibration/1"


class JointCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0, le=253)
    drive_mode: Literal[0, 1] = 0
    homing_offset: int = Field(ge=-2047, le=2047)
    range_min: int = Field(ge=0, le=TICKS_PER_REV - 1)
    range_max: int = Field(ge=0, le=TICKS_PER_REV - 1)

    @model_validator(mode="after")
    def _range_ordered(self):
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min {self.range_min} must be below range_max {self.range_max}")
        return self


class _CalibrationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["anchorvla-so101-calibration/1"]
    joints: dict[str, JointCalibration]


@dataclass(frozen=True)
class ArmCalibration:
    """Joints in bus order; the arrays below follow `joint_names`."""

    joints: dict[str, JointCalibration]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.joints)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(j.id for j in self.joints.values())

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        js = list(self.joints.values())
        lo = np.array([j.range_min for j in js], dtype=np.float64)
        hi = np.array([j.range_max for j in js], dtype=np.float64)
        sign = np.array([-1.0 if j.drive_mode else 1.0 for j in js])
        return (lo + hi) / 2.0, sign, lo, hi

    def ticks_to_rad(self, ticks: np.ndarray) -> np.ndarray:
        mid, sign, _, _ = self._arrays()
        return sign * (np.asarray(ticks, dtype=np.float64) - mid) * RAD_PER_TICK

    def rad_to_ticks(self, rad: np.ndarray) -> np.ndarray:
        """Goal ticks for joint angles, clipped to each joint's recorded range."""
        mid, sign, lo, hi = self._arrays()
        ticks = np.rint(mid + sign * np.asarray(rad, dtype=np.float64) / RAD_PER_TICK)
        return np.clip(ticks, lo, hi).astype(np.int64)

    def limits_rad(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) joint limits in rad implied by the recorded ranges."""
        _, _, lo, hi = self._arrays()
        a, b = self.ticks_to_rad(lo), self.ticks_to_rad(hi)
        return np.minimum(a, b), np.maximum(a, b)


def _joints_from(raw: dict, path: Path) -> dict[str, JointCalibration]:
    try:
        return {name: JointCalibration.model_validate(j) for name, j in raw.items()}
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(
            f"{path}: calibration {where}: {first['msg']} (re-run `anchorvla calibrate arm`)"
        ) from None


def load_calibration(path: str | Path) -> ArmCalibration:
    """Read our calibration file, or a LeRobot calibration JSON (`{joint: {id, drive_mode, ...}}`) as it is."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"calibration file not found: {path} (run `anchorvla calibrate arm` or import LeRobot's)"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected a JSON object of joints")
    if "format" in raw:
        try:
            parsed = _CalibrationFile.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        joints = parsed.joints
    else:  # LeRobot: {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": ..., ...}, ...}
        joints = _joints_from(raw, path)
    ids = [j.id for j in joints.values()]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: two joints share a servo id ({ids}); each joint needs its own id")
    return ArmCalibration(dict(joints))


def save_calibration(path: str | Path, calibration: ArmCalibration) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "joints": {n: j.model_dump() for n, j in calibration.joints.items()}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


# Joint limits of the common SO-101 URDF (deg), used only to give the emulator a plausible calibration.
URDF_LIMITS_DEG: dict[str, tuple[float, float]] = {
    "shoulder_pan": (-110.0, 110.0),
    "shoulder_lift": (-100.0, 100.0),
    "elbow_flex": (-96.8, 96.8),
    "wrist_flex": (-95.0, 95.0),
    "wrist_roll": (-157.2, 162.8),
    "gripper": (-10.0, 100.0),
}


def default_calibration(
    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6), joint_names: tuple[str, ...] = SO101_JOINTS
) -> ArmCalibration:
    """A calibration centred on 2048 with the URDF's range widths: for the emulator, never for a real arm."""
    joints = {}
    for servo_id, name in zip(ids, joint_names, strict=True):
        lo, hi = URDF_LIMITS_DEG.get(name, (-90.0, 90.0))
        half = round((hi - lo) / 2 / 360 * TICKS_PER_REV)
        joints[name] = JointCalibration(
            id=servo_id, homing_offset=0, range_min=2048 - half, range_max=2048 + half
        )
    return ArmCalibration(joints)


def half_turn_homing_offset(actual_ticks: int) -> int:
    """Homing offset that makes the present pose read 2047 (the middle of a turn)."""
    offset = int(actual_ticks) - (TICKS_PER_REV // 2 - 1)
    return int(math.copysign(min(abs(offset), 2047), offset))
