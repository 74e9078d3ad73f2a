"""The servo bench against a real SO-101: runs only with ANCHORVLA_SERVO_PORT set (e.g. /dev/so101).

ANCHORVLA_SERVO_CALIBRATION (optional) also checks the EEPROM against that file and starts the arm driver
(which holds the present pose). ANCHORVLA_SERVO_SWEEP=JOINT (with the calibration) also sweeps that joint
10 degrees either side of where it is, slowly, aborting on load or an error bit. Nothing else moves a joint.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

PORT = os.environ.get("ANCHORVLA_SERVO_PORT")
CALIBRATION = os.environ.get("ANCHORVLA_SERVO_CALIBRATION")
SWEEP = os.environ.get("ANCHORVLA_SERVO_SWEEP")
pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(
        not PORT, reason="set ANCHORVLA_SERVO_PORT to the servo adapter to run the hardware bench"
    ),
]


@pytest.fixture
def bus():
    from drivers.feetech.bus import FeetechBus

    b = FeetechBus(PORT)
    b.open()
    yield b
    b.close()


def test_six_sts3215_answer(bus):
    from drivers.feetech.so101 import check_servos

    check_servos(bus, (1, 2, 3, 4, 5, 6))


def test_register_dump(bus, capsys):
    from drivers.feetech.table import REGISTERS
    from tools.bench_servos import dump

    dump(bus, [1, 2, 3, 4, 5, 6])
    out = capsys.readouterr().out
    assert all(name in out for name in REGISTERS)


def test_table_reads_and_bus_cycle(bus):
    from tools.bench_servos import cycle_min_s, time_cycles

    ids = [1, 2, 3, 4, 5, 6]
    assert all(bus.read(i, "Model_Number") == 777 for i in ids)
    assert all(60 <= bus.read(i, "Present_Voltage") <= 140 for i in ids)
    samples = time_cycles(bus, ids, 200)
    print(
        f"bus cycle median {np.median(samples):.3f} ms, byte-time minimum {cycle_min_s(6, bus.baudrate) * 1e3:.3f} ms"
    )
    assert bus.stats.failures == 0


@pytest.mark.skipif(
    not CALIBRATION, reason="set ANCHORVLA_SERVO_CALIBRATION to check the EEPROM and start the driver"
)
def test_eeprom_matches_and_driver_reads(bus):
    from drivers.feetech.calibration import load_calibration
    from drivers.feetech.so101 import SO101Arm, eeprom_mismatches

    calibration = load_calibration(CALIBRATION)
    assert eeprom_mismatches(bus, calibration) == []
    bus.close()
    arm = SO101Arm(PORT, calibration)
    arm.start()
    try:
        state = arm.read_state()
        low, high = calibration.limits_rad()
        assert np.all(state.positions >= low - 0.05) and np.all(state.positions <= high + 0.05)
    finally:
        arm.stop()


@pytest.mark.skipif(
    not (SWEEP and CALIBRATION), reason="set ANCHORVLA_SERVO_SWEEP=JOINT and the calibration to sweep"
)
def test_guarded_sweep(bus):
    from drivers.feetech.calibration import load_calibration
    from tools.bench_servos import sweep

    result = sweep(bus, load_calibration(CALIBRATION), SWEEP, amplitude_deg=10.0, max_load=0.5)
    print(result)
    assert result.startswith("ok")
