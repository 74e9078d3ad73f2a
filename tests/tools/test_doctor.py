"""`anchorvla doctor` runs here and says what the robot would still need, with fixes."""

from __future__ import annotations

import json

from anchorvla.cli import main as anchorvla
from tests.service_helpers import SIM


def test_doctor_lists_what_a_robot_still_needs(capsys):
    rc = anchorvla(["doctor"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "ok        numpy" in out and "ok        pydantic" in out
    # This machine is no robot: no servo adapter, no unit installed, no Jetson GPU.
    assert "missing   servo adapter" in out and "fix: plug in the servo adapter" in out
    assert "missing   systemd unit" in out
    assert "still needed to run this config here:" in out


def test_doctor_json_and_strict(capsys):
    rc = anchorvla(["doctor", "--json", "--strict"])
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
