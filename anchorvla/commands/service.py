"""`anchorvla service run|install`: the controller as a systemd service, and its installation.

`service run` is what the unit's ExecStart runs: the controller plus sd_notify, the watchdog, operator
control, recording and the live view, logging for journald.

`service install` writes the unit, the udev rules, the sysusers.d entry for the service user and the config,
explaining each step. It refuses stand-in/emulated parts (unless --allow-emulated) and what `service run` would
refuse at start, copies the files the config names into the service's directories and installs the config with
their absolute paths (install_files.py). `--root DIR` writes under DIR instead of / (packaging, tests); `--dry-run` writes
nothing. Only a real install (root /) runs the follow-up commands (systemd-sysusers, udevadm, systemctl).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from anchorvla.commands.install_files import (
    WRITABLE,
    Carried,
    copy_carried,
    plan_install,
    standin_parts,
)
from anchorvla.errors import UserError
from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.journal import configure_logging
from onboard.runtime import Devices, run_event_loop
from onboard.service import serve, unit_stop_timeout_s
from onboard.startup_check import check_policy_inputs
from onboard.telemetry import format_summary, write_summary
from policy_runtime.bundle import open_bundle

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT_NAME = "anchorvla-onboard.service"
RULES_NAME = "99-anchorvla.rules"
SERIAL_BY_ID = Path("/dev/serial/by-id")
PROTECTED_HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome= hides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run the controller under systemd (READY/WATCHDOG, control, recording)")
    run.add_argument(
        "--config", required=True, type=Path, help="YAML config (e.g. /etc/anchorvla/onboard.yaml)"
    )
    run.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: until signalled)"
    )
    run.add_argument("--summary", type=Path, default=None, help="write the run summary as JSON here")
    inst = sub.add_parser("install", help="install the systemd unit, udev rules, service user and config")
    inst.add_argument(
        "--config",
        required=True,
        type=Path,
        help="the robot's config to install as /etc/anchorvla/onboard.yaml",
    )
    inst.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install under this directory instead of / (no commands run)",
    )
    inst.add_argument("--dry-run", action="store_true", help="explain every step, write and run nothing")
    inst.add_argument(
        "--arm-serial",
        default=None,
        help="USB serial number of the servo adapter (default: the one in /dev/serial/by-id)",
    )
    inst.add_argument("--user", default="anchorvla", help="service user and operator group")
    inst.add_argument("--prefix", type=Path, default=REPO, help="where the checkout with .venv lives")
    inst.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing /etc/anchorvla/onboard.yaml and the files it names",
    )
    inst.add_argument(
        "--allow-emulated",
        action="store_true",
        help="install a config with stand-in, emulated or simulated parts (a try-out, not the robot)",
    )


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0 seconds (got {args.duration})")
    check_policy_inputs(config, goal_supplied=False)  # before any device is built; no sim session here
    configure_logging("DEBUG" if args.verbose else config.telemetry.log_level)
    faulthandler.enable(sys.__stderr__)  # the watchdog's SIGABRT dumps every thread's stack into the journal
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    engine = build_engine(config)
    result = run_event_loop(serve(config, devices, engine, args.duration))
    print(format_summary(result))
    if args.summary is not None:
        write_summary(args.summary, result)
    return 0 if result["exit_reason"] in ("duration", "signal:SIGINT", "signal:SIGTERM") else 1


def _detect_arm_serial() -> str:
    links = sorted(SERIAL_BY_ID.glob("*")) if SERIAL_BY_ID.is_dir() else []
    if len(links) != 1:
        found = ", ".join(p.name for p in links) or "none"
        raise UserError(
            f"cannot pick the servo adapter's USB serial (adapters in {SERIAL_BY_ID}: {found}); pass --arm-serial SERIAL"
        )
    # by-id names end in `_<serial>-if00-port0` (or `_<serial>-if00`)
    return links[0].name.rsplit("-if", 1)[0].rsplit("_", 1)[-1]


def _step(number: int, text: str) -> None:
    print(f"[{number}] {text}")


def _check_installable(config, allow_emulated: bool) -> None:
    """Refuse what the service would refuse at start, and stand-ins meant for tests, before writing anything."""
    parts = standin_parts(config)
    if parts and not allow_emulated:
        raise UserError(
            f"the config has stand-in/emulated parts ({', '.join(parts)}); the service drives the real robot: "
            "use the real drivers (configs/robot.yaml), or pass --allow-emulated for a try-out"
        )
    check_policy_inputs(config, goal_supplied=False)
    policy = config.policy
    if policy.engine in ("onnxruntime", "tensorrt"):  # hashes and gates of the variant the service will run
        open_bundle(
            policy.bundle,
            policy.precision,
            "onnx" if policy.engine == "onnxruntime" else "tensorrt",
            policy.force_unverified,
            policy.checkpoint_sha256,
        )


def _installed_config_text(source: Path, tree: dict) -> str:
    header = (
        f"# Installed by `anchorvla service install` from {source.resolve()}: its settings, with every file it\n"
        "# names copied into the service's directories and every path absolute. Comments: configs/robot.yaml.\n"
    )
    return header + yaml.safe_dump(tree, sort_keys=False)


def _warn_protected_prefix(prefix: Path, unit: str) -> None:
    """ProtectHome= hides /home, /root and /run/user from the service: a checkout there cannot start."""
    protect = re.search(r"^ProtectHome=(\S+)", unit, re.MULTILINE)
    home = next((h for h in PROTECTED_HOMES if prefix.resolve().is_relative_to(h)), None)
    if protect and protect.group(1) != "no" and home is not None:
        print(
            f"warning: --prefix {prefix} is under {home}, which the unit's ProtectHome={protect.group(1)} hides from "
            f"the service (its ExecStart would not be found): put the checkout under /opt (deploy/JETSON.md)"
        )


def _install(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # refuse to install a config the controller would refuse
    _check_installable(config, args.allow_emulated)
    serial = args.arm_serial or _detect_arm_serial()
    if not serial.replace("-", "").replace("_", "").isalnum():
        raise UserError(f"--arm-serial {serial!r}: expected letters, digits, '-' or '_' (ID_SERIAL_SHORT)")
    if not args.user.isidentifier():
        raise UserError(f"--user {args.user!r}: expected a plain user name")
    root = args.root
    plan = plan_install(config, args.config, root)
    real = root.resolve() == Path("/") and not args.dry_run
    if real and os.geteuid() != 0:
        raise UserError("installing into / needs root (run with sudo), or pass --root DIR / --dry-run")
    fills = {
        "@PREFIX@": str(args.prefix),
        "@CONFIG@": "/etc/anchorvla/onboard.yaml",
        "@USER@": args.user,
        "@ARM_SERIAL@": serial,
        "@TIMEOUT_STOP_S@": str(unit_stop_timeout_s(config)),
    }

    def fill(text: str) -> str:
        for key, value in fills.items():
            text = text.replace(key, value)
        return text

    unit = fill((DEPLOY / UNIT_NAME).read_text())
    _warn_protected_prefix(args.prefix, unit)
    sysusers = (
        f"# The AnchorVLA controller's user; its group also admits operators to the control socket.\n"
        f'u {args.user} - "AnchorVLA onboard controller" /var/lib/anchorvla\n'
        f"m {args.user} dialout\nm {args.user} video\nm {args.user} render\n"
    )
    files = [
        (
            f"service user '{args.user}' (group '{args.user}', member of dialout, video, render) via systemd-sysusers",
            "usr/lib/sysusers.d/anchorvla.conf",
            sysusers,
        ),
        (
            f"systemd unit: Type=notify, WatchdogSec=2, Restart=on-failure, runs as '{args.user}'",
            f"etc/systemd/system/{UNIT_NAME}",
            unit,
        ),
        (
            f"udev rules: the servo adapter with USB serial {serial} becomes /dev/so101",
            f"etc/udev/rules.d/{RULES_NAME}",
            fill((DEPLOY / RULES_NAME).read_text()),
        ),
        *(
            (f"{c.what} ({c.key}): a copy of {c.source}", str(Path(c.target).relative_to(root.resolve())), c)
            for c in plan.carried
        ),
        (
            "controller config (the unit's --config), every path absolute",
            "etc/anchorvla/onboard.yaml",
            _installed_config_text(args.config, plan.config),
        ),
    ]
    if config.robot.arm.driver == "feetech" and config.robot.arm.port != "/dev/so101":
        print(f"note: robot.arm.port is {config.robot.arm.port}; /dev/so101 survives re-plugging and reboots")
    if config.service.control.group not in (None, args.user):
        print(
            f"note: service.control.group is '{config.service.control.group}', not '{args.user}': operators must be in that group"
        )
    for where in plan.outside_writable:
        print(
            f"note: {where} is outside the service's writable {', '.join(map(str, WRITABLE))}: it cannot write there"
        )
    verb = "would write" if args.dry_run else "writing"
    config_target = root / "etc/anchorvla/onboard.yaml"
    keep = config_target.exists() and not args.force  # the installed config and the files it names stay
    for number, (what, rel, content) in enumerate(files, 1):
        target = root / rel
        _step(number, f"{what}\n    {verb} {target}")
        if args.dry_run:
            continue
        if keep and (target == config_target or isinstance(content, Carried)):
            print(f"    kept the existing {target} (--force replaces it)")
            continue
        if isinstance(content, Carried):
            copy_carried(content, replace=args.force)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    follow_up = [
        ("create the service user", ["systemd-sysusers"]),
        (
            "load the udev rules and apply them to plugged-in adapters",
            ["udevadm", "control", "--reload-rules"],
        ),
        ("", ["udevadm", "trigger", "--subsystem-match=tty", "--subsystem-match=usb"]),
        ("make systemd read the unit", ["systemctl", "daemon-reload"]),
        ("start at boot", ["systemctl", "enable", UNIT_NAME]),
    ]
    number = len(files) + 1
    for what, cmd in follow_up:
        if what:
            _step(number, what)
            number += 1
        if real:
            if shutil.which(cmd[0]) is None:
                raise UserError(
                    f"{cmd[0]} not found: is this a systemd machine? (the files are written; run the rest by hand)"
                )
            print(f"    running: {' '.join(cmd)}")
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise UserError(
                    f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
                )
            if cmd[0] == "systemd-sysusers" and not keep:  # the group exists now: it may read the secrets
                for secret in (c for c in plan.carried if c.secret):
                    shutil.chown(secret.target, group=args.user)
        elif args.dry_run:
            print(f"    would run: {' '.join(cmd)}")
        else:
            print(f"    on the robot, run: sudo {' '.join(cmd)}")
    print(f"then: sudo systemctl start {UNIT_NAME}; journalctl -u {UNIT_NAME} -f")
    print(
        f"operators: sudo usermod -aG {args.user} OPERATOR, then `anchorvla ctl status --config /etc/anchorvla/onboard.yaml`"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    return _run(args) if args.service_command == "run" else _install(args)
