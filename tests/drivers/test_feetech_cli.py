"""`anchorvla emulate servos`, `anchorvla bench servos` and `anchorvla calibrate import` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def anchorvla(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout)


@pytest.fixture
def emulated_link(tmp_path):
    """`anchorvla emulate servos --link PATH` in its own process, ended with Ctrl-C (SIGINT) by the test."""
    link = tmp_path / "so101"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anchorvla.cli",
            "emulate",
            "servos",
            "--link",
            str(link),
            "--return-delay",
            "0",
        ],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not link.is_symlink() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert link.is_symlink(), proc.stderr.read() if proc.poll() is not None else "no link"
        yield link
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert not link.exists()  # the emulator removed its symlink


def test_bench_servos_against_the_emulator_command(emulated_link, tmp_path):
    figures_path = tmp_path / "bench.json"
    run = anchorvla(
        "bench",
        "servos",
        "--port",
        str(emulated_link),
        "--cycles",
        "100",
        "--max-ratio",
        "50",
        "--json",
        str(figures_path),
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "   1    777 3.10" in out and "   6    777 3.10" in out and "   7    777" not in out
    assert "Homing_Offset" in out and "byte-time min" in out
    figures = json.loads(figures_path.read_text())
    assert figures["ids"] == [1, 2, 3, 4, 5, 6]
    assert figures["cycle_byte_time_min_ms"] == pytest.approx(0.88)
    assert figures["cycle_median_ms"] >= 0.88 * 0.95  # the emulator cannot beat the wire


def test_bench_on_a_missing_port_is_one_line(tmp_path):
    run = anchorvla("bench", "servos", "--port", str(tmp_path / "ttyUSB9"))
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "does not exist" in run.stderr


def test_calibrate_import_of_a_lerobot_file(tmp_path):
    src, out = ROOT / "tests" / "data" / "lerobot_so101_follower_calibration.json", tmp_path / "arm.json"
    run = anchorvla("calibrate", "import", str(src), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text())["joints"]["gripper"]["range_max"] == 3489
    bad = anchorvla("calibrate", "import", str(tmp_path / "missing.json"), "--out", str(out))
    assert bad.returncode == 2 and "calibration file not found" in bad.stderr


def test_bench_checks_eeprom_and_sweeps_one_joint(tmp_path, capsys):
    """The bench's main() in process, against an in-process emulator holding a calibration."""
    import argparse

    from drivers.emulated.servo_bus import ServoBusEmulator
    from drivers.feetech.calibration import default_calibration, save_calibration
    from tools import bench_servos

    cal = default_calibration()
    path = tmp_path / "arm.json"
    save_calibration(path, cal)
    parser = argparse.ArgumentParser()
    bench_servos.add_arguments(parser)
    with ServoBusEmulator(calibration=cal) as emu:
        args = parser.parse_args(
            [
                "--port",
                emu.port,
                "--scan",
                "1",
                "7",
                "--calibration",
                str(path),
                "--sweep",
                "elbow_flex",
                "--sweep-deg",
                "3",
                "--cycles",
                "50",
                "--max-ratio",
                "50",
                "--no-dump",
            ]
        )
        figures, ok = bench_servos.main(args)
        assert emu.servo(3).value("Torque_Enable") == 1 and emu.servo(2).value("Torque_Enable") == 0
        emu.servo(1).set_value("Max_Position_Limit", 4000)
        figures_bad, ok_bad = bench_servos.main(args)
    out = capsys.readouterr().out
    assert ok, out
    assert figures["eeprom_mismatches"] == [] and figures["sweep"].startswith("ok")
    assert not ok_bad and "shoulder_pan (id 1) Max_Position_Limit is 4000, file says 3300" in out


def test_sweep_aborts_on_a_stalled_joint(tmp_path, capsys):
    import argparse

    from drivers.emulated.servo_bus import ServoBusEmulator
    from drivers.feetech.calibration import default_calibration, save_calibration
    from tools import bench_servos

    cal = default_calibration()
    path = tmp_path / "arm.json"
    save_calibration(path, cal)
    parser = argparse.ArgumentParser()
    bench_servos.add_arguments(parser)
    with ServoBusEmulator(calibration=cal) as emu:
        emu.servo(2).faults.stalled = True
        args = parser.parse_args(
            [
                "--port",
                emu.port,
                "--scan",
                "1",
                "6",
                "--calibration",
                str(path),
                "--sweep",
                "shoulder_lift",
                "--sweep-deg",
                "5",
                "--cycles",
                "10",
                "--max-ratio",
                "50",
                "--no-dump",
            ]
        )
        figures, ok = bench_servos.main(args)
    assert not ok and figures["sweep"].startswith("ABORTED")


def test_run_with_the_feetech_driver_on_a_missing_port_is_one_line(tmp_path):
    from drivers.feetech.calibration import default_calibration, save_calibration

    save_calibration(tmp_path / "so101.json", default_calibration())
    config = tmp_path / "robot.yaml"
    config.write_text(
        "robot:\n  arm: {driver: feetech, port: /dev/ttyNOPE0, calibration: ./so101.json}\n  base: {driver: none}\n"
    )
    run = anchorvla("run", "--config", str(config), "--duration", "1")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("anchorvla: error: serial port /dev/ttyNOPE0 does not exist")
    )
