"""`anchorvla doctor` runs here and says what the robot would still need, with fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from anchorvla.cli import main as anchorvla
from drivers.emulated.go2 import Go2Emulator
from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.feetech.calibration import default_calibration, save_calibration
from drivers.unitree import sport_api as api
from onboard.config import load_config
from policy_runtime.bundle import read_manifest
from tests.bundle_helpers import bundle_copy
from tests.service_helpers import REPO, SIM
from tools.doctor_robot import check_brltty, check_power_mode

CAL = default_calibration()
SIM_YAML = REPO / "configs" / "sim.yaml"


def test_doctor_lists_what_a_robot_still_needs(capsys):
    rc = anchorvla(["doctor", "--offline"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ok        numpy" in out and "ok        pydantic" in out
    # This machine is no robot: no servo adapter, no unit installed, no Jetson GPU.
    assert "missing   servo adapter" in out and "fix: plug in the servo adapter" in out
    assert "missing   systemd unit" in out
    assert "still needed to run this config here:" in out


def test_doctor_json_and_strict(capsys):
    rc = anchorvla(["doctor", "--json", "--strict", "--offline"])
    checks = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in checks}
    assert rc == 1  # the robot's needs are not met here
    assert all(c["status"] in ("ok", "missing", "optional") for c in checks)
    assert all(c["fix"] for c in checks if c["status"] == "missing")
    assert by_name["python"]["status"] == "ok"


def test_doctor_sees_an_install_under_a_target_root(tmp_path, capsys):
    root = tmp_path / "root"
    assert (
        anchorvla(
            [
                "service",
                "install",
                "--allow-emulated",
                "--config",
                str(SIM),
                "--root",
                str(root),
                "--arm-serial",
                "A1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    anchorvla(["doctor", "--config", str(SIM), "--root", str(root), "--json"])
    by_name = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    for name in ("systemd unit", "udev rules", "service user entry", "installed config"):
        assert by_name[name]["status"] == "ok", by_name[name]
    # The sim config uses stand-ins: no servo adapter or cameras are asked for.
    assert "servo adapter" not in by_name and "RealSense cameras" not in by_name


BROKEN = """
import sys

class Broken:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise (OSError if sys.argv[2] == "OSError" else ImportError)(sys.argv[3])
        return None

sys.meta_path.insert(0, Broken())
from anchorvla.cli import main
sys.exit(main(sys.argv[4:]))
"""


def doctor_with_broken(module: str, error: str, message: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BROKEN, module, error, message, "doctor", "--offline", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_broken_numpy_is_one_line_and_no_config_is_read():
    done = doctor_with_broken("numpy", "ImportError", "libopenblas.so.0: cannot open shared object file")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    numpy = [ln for ln in lines if ln.split()[1:2] == ["numpy"]]
    assert numpy == [
        "missing   numpy     installed but broken: ImportError: libopenblas.so.0: cannot open shared object file"
    ]
    assert any(ln.startswith("missing   config") and "needs numpy" in ln for ln in lines)


def test_a_broken_onnxruntime_is_one_line_and_the_rest_is_checked():
    done = doctor_with_broken(
        "onnxruntime", "OSError", "libcudart.so.12: cannot open shared object file", "--config", str(SIM_YAML)
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.split()[1:2] == ["onnxruntime"])
    assert "installed but broken: OSError: libcudart.so.12" in line and line.startswith("missing")
    assert "ok        numpy" in done.stdout and "policy bundle" in done.stdout


def robot_config(tmp_path: Path, port: str, calibration: Path, bundle: Path, domain_id: int) -> Path:
    raw = {
        "robot": {
            "arm": {"driver": "feetech", "port": port, "calibration": str(calibration)},
            "base": {"driver": "go2", "interface": "lo", "domain_id": domain_id, "state_timeout_s": 2.0},
            "cameras": [
                {"name": "third_person", "driver": "standin"},
                {"name": "wrist", "driver": "standin"},
            ],
        },
        "policy": {"engine": "onnxruntime", "bundle": str(bundle), "precision": "int8"},
    }
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def doctor_checks(config: Path, root: Path, capsys) -> dict:
    anchorvla(["doctor", "--config", str(config), "--root", str(root), "--json"])
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)}


def test_robot_probes_hear_the_go2_ping_the_servos_and_check_calibration_and_bundle(tmp_path, capsys):
    calibration = tmp_path / "so101.json"
    save_calibration(calibration, CAL)
    bundle = bundle_copy(tmp_path)
    capsys.readouterr()  # what building the shared bundle printed
    with (
        ServoBusEmulator(calibration=CAL) as servos,
        Go2Emulator("lo", 95, initial_mode=api.MODE_BALANCE_STAND),
    ):
        config = robot_config(tmp_path, servos.port, calibration, bundle, 95)
        checks = doctor_checks(config, tmp_path, capsys)
        assert checks["Go2 state"]["status"] == "ok" and "balance stand" in checks["Go2 state"]["detail"]
        assert checks["servos"]["status"] == "ok" and "ids 1, 2, 3, 4, 5, 6" in checks["servos"]["detail"]
        assert checks["calibration vs EEPROM"]["status"] == "ok"
        assert (
            checks["policy bundle"]["status"] == "ok" and "'int8' passed" in checks["policy bundle"]["detail"]
        )

        other = json.loads(calibration.read_text())
        other["joints"]["shoulder_pan"]["homing_offset"] = 40
        calibration.write_text(json.dumps(other))
        manifest = read_manifest(bundle)
        manifest.variants["int8"].status = "unverified"
        manifest.write(bundle)
        checks = doctor_checks(config, tmp_path, capsys)
        cal = checks["calibration vs EEPROM"]
        assert (
            cal["status"] == "missing"
            and "shoulder_pan (id 1) Homing_Offset is 0, file says 40" in cal["detail"]
        )
        assert (
            checks["policy bundle"]["status"] == "missing"
            and "has not been verified" in checks["policy bundle"]["detail"]
        )
    # No robot: the state topic is silent, and the line says where it listened.
    checks = doctor_checks(
        robot_config(tmp_path, "/nonexistent/tty", calibration, bundle, 96), tmp_path, capsys
    )
    assert (
        checks["Go2 state"]["status"] == "missing"
        and "interface lo, DDS domain 96" in checks["Go2 state"]["detail"]
    )
    assert "servos" not in checks and checks["servo adapter"]["status"] == "missing"


def test_power_mode_from_nvpmodel_and_brltty_taking_the_adapter(tmp_path, monkeypatch):
    tools_dir = tmp_path / "bin"
    tools_dir.mkdir()
    nvpmodel = tools_dir / "nvpmodel"  # the board's tool cannot run here: a stand-in prints what it prints
    monkeypatch.setenv("PATH", f"{tools_dir}{os.pathsep}{os.environ['PATH']}")
    nvpmodel.write_text("#!/bin/sh\necho 'NV Power Mode: 15W'\necho 2\n")
    nvpmodel.chmod(0o755)
    (check,) = check_power_mode()
    assert check.status == "optional" and "15W (mode 2)" in check.detail and "nvpmodel -m 0" in check.fix
    nvpmodel.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    assert check_power_mode()[0].status == "ok"

    feetech = load_config(SIM, {"robot": {"arm": {"driver": "feetech", "port": "/dev/so101"}}})
    root, proc = tmp_path / "root", tmp_path / "proc"
    (proc / "812").mkdir(parents=True)
    (proc / "812" / "comm").write_text("sshd\n")
    assert check_brltty(feetech, root, proc)[0].status == "ok"
    (root / "usr/lib/udev/rules.d").mkdir(parents=True)
    (root / "usr/lib/udev/rules.d/85-brltty.rules").write_text("")
    (proc / "977").mkdir()
    (proc / "977" / "comm").write_text("brltty\n")
    (check,) = check_brltty(feetech, root, proc)
    assert (
        check.status == "missing" and "running (pid 977)" in check.detail and "apt remove brltty" in check.fix
    )
    assert check_brltty(load_config(SIM), root, proc) == []  # no feetech adapter: nothing to take
