"""Control-table encodings and the calibration file: pure functions, no bus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anchorvla.errors import UserError
from drivers.feetech.calibration import (
    default_calibration,
    half_turn_homing_offset,
    load_calibration,
    save_calibration,
)
from drivers.feetech.table import REGISTERS, decode, encode, reg

SIGNED = [r for r in REGISTERS.values() if r.sign_bit is not None]


@pytest.mark.parametrize(
    ("name", "bit"),
    [
        ("Goal_Position", 15),
        ("Present_Position", 15),
        ("Goal_Velocity", 15),
        ("Present_Velocity", 15),
        ("Present_Current", 15),
        ("Present_Load", 10),
        ("Homing_Offset", 11),
    ],
)
def test_sign_bits_follow_the_datasheet(name, bit):
    assert reg(name).sign_bit == bit
    assert encode(-5, reg(name)) == 5 | (1 << bit)
    assert decode(5 | (1 << bit), reg(name)) == -5


@given(st.sampled_from(SIGNED), st.integers(min_value=-(1 << 10) + 1, max_value=(1 << 10) - 1))
def test_signed_round_trip(register, value):
    assert decode(encode(value, register), register) == value


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(ValueError):
        encode(2048, reg("Homing_Offset"))  # needs bit 11, the sign
    with pytest.raises(ValueError):
        encode(-1, reg("Return_Delay"))
    with pytest.raises(ValueError):
        encode(256, reg("Return_Delay"))


def test_addresses_do_not_overlap():
    taken = {}
    for r in REGISTERS.values():
        for a in range(r.address, r.address + r.size):
            assert a not in taken, f"{r.name} overlaps {taken[a]}"
            taken[a] = r.name


# A LeRobot SO-101 follower calibration as LeRobot writes it (~/.cache/huggingface/lerobot/calibration/...).
LEROBOT_FILE = Path(__file__).parents[1] / "data" / "lerobot_so101_follower_calibration.json"
LEROBOT = json.loads(LEROBOT_FILE.read_text())


def test_lerobot_file_imports_and_round_trips(tmp_path):
    src = tmp_path / "so101_follower.json"
    src.write_text(json.dumps(LEROBOT))
    cal = load_calibration(src)
    assert cal.joint_names == tuple(LEROBOT)
    assert cal.joints["wrist_flex"].homing_offset == 1974
    out = tmp_path / "arm.json"
    save_calibration(out, cal)
    again = load_calibration(out)
    assert again == cal
    assert json.loads(out.read_text())["format"] == "anchorvla-so101-calibration/1"


def test_ticks_rad_convention_zero_at_mid_range():
    cal = load_calibration_from(LEROBOT)
    mid = np.array([(j["range_min"] + j["range_max"]) / 2 for j in LEROBOT.values()])
    assert np.allclose(cal.ticks_to_rad(mid), 0.0)
    rad = np.array([0.3, -0.2, 0.1, 0.0, 1.0, 0.5])
    assert np.allclose(cal.ticks_to_rad(cal.rad_to_ticks(rad)), rad, atol=2 * np.pi / 4096)
    # Goals beyond the recorded range are clipped to it.
    assert cal.rad_to_ticks(np.full(6, 10.0)).tolist() == [j["range_max"] for j in LEROBOT.values()]


def test_drive_mode_flips_the_sign():
    flipped = dict(LEROBOT, shoulder_pan=dict(LEROBOT["shoulder_pan"], drive_mode=1))
    a, b = load_calibration_from(LEROBOT), load_calibration_from(flipped)
    ticks = np.array([2100, 2000, 2000, 2000, 2000, 2800])
    assert a.ticks_to_rad(ticks)[0] == pytest.approx(-b.ticks_to_rad(ticks)[0])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"shoulder_pan": dict(LEROBOT["shoulder_pan"], range_min=4000)}), "range_min"),
        (json.dumps({"a": LEROBOT["shoulder_pan"], "b": LEROBOT["shoulder_pan"]}), "share a servo id"),
        (json.dumps({"format": "anchorvla-so101-calibration/1", "joints": {"x": {"id": 1}}}), "joints.x"),
    ],
)
def test_bad_calibration_files_give_one_line(tmp_path, content, needle):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        load_calibration(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_calibration_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="anchorvla calibrate arm"):
        load_calibration(tmp_path / "nope.json")


def test_half_turn_homing_makes_the_pose_read_2047():
    for actual in (0, 1000, 2047, 3000, 4094):
        assert actual - half_turn_homing_offset(actual) == 2047
    assert default_calibration().ids == (1, 2, 3, 4, 5, 6)


def load_calibration_from(doc: dict):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.json"
        path.write_text(json.dumps(doc))
        return load_calibration(path)
