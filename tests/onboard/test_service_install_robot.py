"""`service install` of the robot's config: the files it names are copied into the service's directories, the
installed config names them by absolute paths inside the install root, and that tree runs on its own (emulated
devices substituted); stand-ins are refused unless --allow-emulated; a checkout under /home is warned about."""

from __future__ import annotations

import grp
import json
import os
import shutil
from pathlib import Path

import yaml

from anchorvla.cli import main as anchorvla
from drivers.feetech.calibration import default_calibration, save_calibration
from onboard.config import load_config
from tests.bundle_helpers import tiny_bundle
from tests.service_helpers import REPO, SIM, short_dir

DOMAIN_ID = 91


def robot_checkout(where: Path) -> Path:
    """configs/robot.yaml beside a robot/ folder with a calibration, a bundle and a control token, as deploy/JETSON.md
    lays them out; the devices substituted by the emulated ones and machine settings by this machine's."""
    raw = yaml.safe_load((REPO / "configs" / "robot.yaml").read_text())
    robot = raw["robot"]
    robot["arm"]["driver"] = "emulated"
    robot["base"].update(driver="emulated", domain_id=DOMAIN_ID)
    robot["cameras"] = [
        {"name": c["name"], "driver": "standin", "width": 64, "height": 64, "fps": 15}
        for c in robot["cameras"]
    ]
    raw["policy"]["engine"] = "onnxruntime"  # no TensorRT here
    raw["service"].update(cpu_affinity=None, realtime_priority=0)
    control = raw["service"]["control"]
    control.update(
        group=grp.getgrgid(os.getgid()).gr_name, tcp_port=None, token_file="../robot/control.token"
    )
    (where / "configs").mkdir(parents=True)
    config = where / "configs" / "robot.yaml"
    config.write_text(yaml.safe_dump(raw))
    save_calibration(where / "robot" / "so101.json", default_calibration())
    shutil.copytree(tiny_bundle()[1], where / "robot" / "bundle")
    (where / "robot" / "control.token").write_text("s3cret\n")
    return config


def strings(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings(value)
    elif isinstance(tree, str):
        yield tree


def test_installed_robot_tree_runs_with_no_path_outside_it(tmp_path, capsys):
    checkout = tmp_path / "checkout"
    config = robot_checkout(checkout)
    root = short_dir() / "root"
    args = ["service", "install", "--config", str(config), "--root", str(root), "--arm-serial", "A1"]
    assert anchorvla([*args, "--prefix", "/opt/anchorvla", "--allow-emulated"]) == 0
    out = capsys.readouterr().out
    assert "arm calibration (robot.arm.calibration)" in out and "policy bundle (policy.bundle)" in out

    etc, state = root / "etc/anchorvla", root / "var/lib/anchorvla"
    assert (etc / "arm-calibration.json").read_bytes() == (checkout / "robot/so101.json").read_bytes()
    assert (state / "policy/manifest.json").read_bytes() == (
        checkout / "robot/bundle/manifest.json"
    ).read_bytes()
    assert (etc / "control.token").stat().st_mode & 0o777 == 0o640
    installed = load_config(etc / "onboard.yaml")
    assert installed.robot.arm.calibration == (etc / "arm-calibration.json").resolve()
    assert installed.policy.bundle == (state / "policy").resolve()
    paths = [s for s in strings(installed.model_dump(mode="json")) if s.startswith("/")]
    outside = [p for p in paths if not Path(p).is_relative_to(root.resolve()) and not p.startswith("/dev/")]
    assert not outside, outside
    assert str(installed.recording.root).startswith(str(root.resolve()))

    shutil.rmtree(checkout)  # the tree needs nothing from where it was installed from
    summary = root / "summary.json"
    rc = anchorvla(
        [
            "service",
            "run",
            "--config",
            str(etc / "onboard.yaml"),
            "--duration",
            "2",
            "--summary",
            str(summary),
        ]
    )
    assert rc == 0, capsys.readouterr()
    result = json.loads(summary.read_text())
    assert result["exit_reason"] == "duration" and result["ticks"] > 10


def test_stand_ins_are_refused_without_allow_emulated(tmp_path, capsys):
    root = tmp_path / "root"
    rc = anchorvla(
        [
            "service",
            "install",
            "--config",
            str(REPO / "configs/sim.yaml"),
            "--root",
            str(root),
            "--arm-serial",
            "A1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "robot.arm.driver 'emulated'" in err and "sim.task 'touch'" in err and "--allow-emulated" in err
    assert not root.exists()


def test_a_file_the_config_names_must_exist(tmp_path, capsys):
    config = robot_checkout(tmp_path)
    (tmp_path / "robot/so101.json").unlink()
    rc = anchorvla(
        [
            "service",
            "install",
            "--allow-emulated",
            "--config",
            str(config),
            "--root",
            str(tmp_path / "root"),
            "--arm-serial",
            "A1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        rc == 2
        and len(err.splitlines()) == 1
        and "robot.arm.calibration" in err
        and "so101.json not found" in err
    )


def test_a_checkout_under_home_is_warned_about(tmp_path, capsys):
    base = [
        "service",
        "install",
        "--allow-emulated",
        "--config",
        str(SIM),
        "--root",
        str(tmp_path / "r"),
        "--arm-serial",
        "A1",
    ]
    assert anchorvla([*base, "--prefix", "/home/robot/anchorvla"]) == 0
    out = capsys.readouterr().out
    assert "warning: --prefix /home/robot/anchorvla is under /home" in out and "ProtectHome=yes" in out
    assert anchorvla([*base, "--prefix", "/opt/anchorvla", "--force"]) == 0
    assert "warning" not in capsys.readouterr().out
