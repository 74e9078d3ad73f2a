"""`anchorvla service install` into a target root (no root needed), `--dry-run`, and journald log lines."""

from __future__ import annotations

import configparser
import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from anchorvla.cli import main as anchorvla
from onboard.config import load_config
from onboard.journal import JournalFormatter
from tests.service_helpers import SIM


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str
    parser.read_string(text)
    return parser


def installed_config(root):
    return load_config(root / "etc/anchorvla/onboard.yaml")


def expected_installed(root):
    """SIM's settings with the paths it writes placed inside the target root."""
    return load_config(
        SIM,
        {
            "service": {"control": {"socket": str(root.resolve() / "run/anchorvla/control.sock")}},
            "recording": {"root": str(root.resolve() / "var/lib/anchorvla/episodes")},
        },
    )


def test_install_into_a_target_root_writes_unit_rules_user_and_config(tmp_path, capsys):
    root = tmp_path / "root"
    rc = anchorvla(
        [
            "service",
            "install",
            "--allow-emulated",
            "--config",
            str(SIM),
            "--root",
            str(root),
            "--arm-serial",
            "5A7C012345",
            "--prefix",
            "/opt/anchorvla",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    unit_text = (root / "etc/systemd/system/anchorvla-onboard.service").read_text()
    unit = unit_sections(unit_text)
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure" and svc["WatchdogSec"] == "2"
    assert (
        svc["ExecStart"]
        == "/opt/anchorvla/.venv/bin/anchorvla service run --config /etc/anchorvla/onboard.yaml"
    )
    assert svc["User"] == "anchorvla" and svc["DevicePolicy"] == "closed"
    assert svc["LimitRTPRIO"] and "CAP_SYS_NICE" in svc["AmbientCapabilities"]
    assert "@PREFIX@" not in unit_text and "@USER@" not in unit_text and "@CONFIG@" not in unit_text
    rules = (root / "etc/udev/rules.d/99-anchorvla.rules").read_text()
    assert 'ENV{ID_SERIAL_SHORT}=="5A7C012345", SYMLINK+="so101"' in rules
    sysusers = (root / "usr/lib/sysusers.d/anchorvla.conf").read_text()
    assert sysusers.splitlines()[1].startswith("u anchorvla -") and "m anchorvla dialout" in sysusers
    assert installed_config(root) == expected_installed(root)
    # Each step is explained; with a target root the system commands are listed, not run.
    for step in ("[1] service user", "[2] systemd unit", "[3] udev rules", "[4] controller config"):
        assert step in out
    assert "on the robot, run: sudo systemctl enable anchorvla-onboard.service" in out


def test_install_keeps_an_existing_config_unless_forced(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "etc/anchorvla").mkdir(parents=True)
    (root / "etc/anchorvla/onboard.yaml").write_text("# tuned on the robot\n")
    args = [
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
    assert anchorvla(args) == 0
    assert (root / "etc/anchorvla/onboard.yaml").read_text() == "# tuned on the robot\n"
    assert "kept the existing" in capsys.readouterr().out
    assert anchorvla([*args, "--force"]) == 0
    assert installed_config(root) == expected_installed(root)


def test_dry_run_writes_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    rc = anchorvla(
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
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert (
        rc == 0 and "would write" in out and "would run: systemctl daemon-reload" in out and not root.exists()
    )


def test_bad_install_input_is_one_line(tmp_path, capsys):
    rc = anchorvla(
        [
            "service",
            "install",
            "--allow-emulated",
            "--config",
            str(SIM),
            "--root",
            str(tmp_path),
            "--arm-serial",
            'x"; rm -rf /',
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--arm-serial" in err and len(err.strip().splitlines()) == 1
    rc = anchorvla(
        [
            "service",
            "install",
            "--allow-emulated",
            "--config",
            str(tmp_path / "nope.yaml"),
            "--root",
            str(tmp_path),
            "--arm-serial",
            "A1",
        ]
    )
    assert rc == 2 and "config file not found" in capsys.readouterr().err


def test_journal_lines_carry_priority_and_fields(monkeypatch):
    record = logging.LogRecord(
        "anchorvla.control", logging.WARNING, __file__, 1, "operator command", None, None
    )
    record.fields = {"command": "estop", "peer": "uid=1000 pid=42", "reason": 'hand "in" way'}
    line = JournalFormatter(journal=True).format(record)
    assert (
        line
        == '<4>WARNING anchorvla.control: operator command command=estop peer="uid=1000 pid=42" reason="hand \\"in\\" way"'
    )
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        err = logging.LogRecord("anchorvla", logging.ERROR, __file__, 1, "two\nlines", None, sys.exc_info())
    text = JournalFormatter(journal=True).format(err)
    assert "\n" not in text and text.startswith("<3>ERROR anchorvla: two | lines exception=")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_passes_systemd_analyze_verify(tmp_path, capsys):
    prefix = tmp_path / "prefix"
    (prefix / ".venv/bin").mkdir(parents=True)
    exe = prefix / ".venv/bin/anchorvla"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    root = tmp_path / "root"
    args = [
        "--allow-emulated",
        "--config",
        str(SIM),
        "--root",
        str(root),
        "--arm-serial",
        "A1",
        "--prefix",
        str(prefix),
    ]
    assert anchorvla(["service", "install", *args]) == 0
    unit = root / "etc/systemd/system/anchorvla-onboard.service"
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # systemd warns about unknown keys or bad values here


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="needs systemd-sysusers")
def test_sysusers_entry_creates_the_service_user_in_its_groups(tmp_path):
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
    done = subprocess.run(["systemd-sysusers", f"--root={root}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    passwd = (root / "etc/passwd").read_text()
    groups = {
        line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()
    }
    assert passwd.startswith("anchorvla:x:") and ":/var/lib/anchorvla:" in passwd
    assert all("anchorvla" in groups[g] for g in ("dialout", "video", "render")) and "anchorvla" in groups


def install_unit(tmp_path, config=SIM) -> Path:
    prefix = tmp_path / "prefix"
    (prefix / ".venv/bin").mkdir(parents=True, exist_ok=True)
    exe = prefix / ".venv/bin/anchorvla"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    root = tmp_path / "root"
    args = ["--allow-emulated", "--config", str(config), "--root", str(root), "--arm-serial", "A1"]
    assert anchorvla(["service", "install", *args, "--prefix", str(prefix), "--force"]) == 0
    return root / "etc/systemd/system/anchorvla-onboard.service"


def test_installed_unit_is_hardened_and_keeps_what_the_robot_needs(tmp_path, capsys):
    text = install_unit(tmp_path).read_text()
    svc = unit_sections(text)["Service"]
    for key in (
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "LockPersonality",
        "RestrictSUIDSGID",
    ):
        assert svc[key] == "yes", key
    assert svc["SystemCallFilter"] == "@system-service" and svc["SystemCallArchitectures"] == "native"
    assert svc["SystemCallErrorNumber"] == "EPERM" and svc["UMask"] == "0027"
    assert svc["RestartPreventExitStatus"] == "2" and int(svc["LimitNOFILE"]) >= 1024
    # The fast loop's SCHED_FIFO: RestrictRealtime would refuse it.
    assert "RestrictRealtime" not in svc and svc["CapabilityBoundingSet"] == "CAP_SYS_NICE"
    assert int(svc["LimitRTPRIO"]) >= 90 and svc["DevicePolicy"] == "closed"
    allowed = [
        line.split("=", 1)[1].split()[0] for line in text.splitlines() if line.startswith("DeviceAllow=")
    ]
    for node in (
        "/dev/so101",
        "char-ttyUSB",
        "char-video4linux",
        "char-usb_device",
        "/dev/nvmap",
        "/dev/nvhost-gpu",
    ):
        assert node in allowed, node


def test_stop_timeout_leaves_room_for_the_configured_park(tmp_path, capsys):
    default = unit_sections(install_unit(tmp_path).read_text())["Service"]
    assert int(default["TimeoutStopSec"]) >= load_config(SIM).safety.stop.park_timeout_s + 10
    settings = yaml.safe_load(SIM.read_text())
    settings["safety"] = {"stop": {"park_timeout_s": 45, "step_timeout_s": 1.0, "on_exit": "park_release"}}
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(settings))
    assert unit_sections(install_unit(tmp_path, slow).read_text())["Service"]["TimeoutStopSec"] == "59"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_security_rates_the_unit_3_or_better(tmp_path, capsys):
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(install_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 3.0, done.stdout
