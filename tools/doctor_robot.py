"""`anchorvla doctor`'s checks that talk to the robot or read the board: the Go2's state topic heard on the
configured interface, the servos answering at the configured ids, the calibration file against their EEPROM, the
chosen bundle variant verified, the Jetson's power mode, and brltty (which takes CH340/CH341 serial adapters, the
SO-101's, away from the controller on Ubuntu).

Probes (DDS, the servo bus) run only where they can reach the robot: DDS listens on loopback or on an interface
with an address in the Go2's network (192.168.123.0/24), never elsewhere; `offline` skips every probe.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from anchorvla.errors import UserError
from tools.doctor_checks import Check

if TYPE_CHECKING:
    from onboard.config import Config

GO2_NETWORK = ipaddress.ip_network("192.168.123.0/24")
SIOCGIFADDR = 0x8915
BRLTTY_FILES = ("usr/bin/brltty", "usr/lib/udev/rules.d/85-brltty.rules", "lib/udev/rules.d/85-brltty.rules")


def interface_ipv4(interface: str) -> str | None:
    """The interface's IPv4 address, or None without one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", interface[:15].encode()))
        return socket.inet_ntoa(packed[20:24])
    except OSError:
        return None
    finally:
        probe.close()


def check_go2_state(config: Config, offline: bool) -> list[Check]:
    base = config.robot.base
    if base.driver != "go2" or offline:
        return []
    where = f"interface {base.interface}, DDS domain {base.domain_id}"
    if base.interface != "lo":
        address = interface_ipv4(base.interface)
        if address is None or ipaddress.ip_address(address) not in GO2_NETWORK:
            return [
                Check(
                    "Go2 state",
                    "missing",
                    f"not listened for: {base.interface} has {address or 'no IPv4 address'}, not one in {GO2_NETWORK}",
                    f"give {base.interface} an address there (e.g. 192.168.123.222/24; the Go2 is .161)",
                )
            ]
    try:
        from cyclonedds.sub import DataReader
        from cyclonedds.topic import Topic

        from drivers.unitree import sport_api as api
        from drivers.unitree.dds_config import Participant
        from drivers.unitree.idl import SportModeState_
    except Exception as exc:  # cyclonedds missing or broken: its package line says so
        return [
            Check(
                "Go2 state",
                "missing",
                f"cannot listen: {type(exc).__name__}: {exc}",
                "see the cyclonedds line",
            )
        ]
    try:
        participant = Participant(base.interface, base.domain_id)
    except UserError as exc:
        return [Check("Go2 state", "missing", str(exc), f"check that {base.interface} is up (`ip link`)")]
    try:
        dp = participant.dp
        reader = DataReader(dp, Topic(dp, api.TOPIC_STATE, SportModeState_))
        samples, end = [], time.monotonic() + base.state_timeout_s
        while not samples and time.monotonic() < end:
            samples = list(reader.take(16))
            time.sleep(0.01)
    finally:
        participant.close()
    if not samples:
        return [
            Check(
                "Go2 state",
                "missing",
                f"nothing on {api.TOPIC_STATE} within {base.state_timeout_s:g} s on {where}",
                "is the Go2 on and its cable in? robot.base.interface and domain_id must match the robot",
            )
        ]
    return [
        Check("Go2 state", "ok", f"{api.TOPIC_STATE} heard on {where}: {api.mode_name(samples[-1].mode)}")
    ]


def check_servos(config: Config, offline: bool) -> list[Check]:
    """Ping the configured ids, then compare their EEPROM with the calibration file."""
    arm = config.robot.arm
    if arm.driver != "feetech" or offline or not arm.port or not Path(arm.port).exists():
        return []  # a missing port is the 'servo adapter' line
    try:
        from drivers.feetech.bus import FeetechBus
        from drivers.feetech.calibration import load_calibration
        from drivers.feetech.so101 import check_servos as ping_servos
        from drivers.feetech.so101 import eeprom_mismatches
    except Exception as exc:
        return [
            Check(
                "servos",
                "missing",
                f"cannot talk to them: {type(exc).__name__}: {exc}",
                "see the servo SDK line",
            )
        ]
    bus = FeetechBus(arm.port, arm.baudrate, arm.retries)
    checks = []
    try:
        bus.open()
        ping_servos(bus, tuple(arm.ids))
        checks.append(
            Check("servos", "ok", f"ids {', '.join(map(str, arm.ids))} answer as STS3215 on {arm.port}")
        )
        if arm.calibration is None:
            checks.append(
                Check("calibration", "missing", "robot.arm.calibration is not set", "anchorvla calibrate arm")
            )
            return checks
        mismatches = eeprom_mismatches(bus, load_calibration(arm.calibration))
        if mismatches:
            more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
            checks.append(
                Check(
                    "calibration vs EEPROM",
                    "missing",
                    f"{arm.calibration}: {mismatches[0]}{more}",
                    "re-run `anchorvla calibrate arm`, or point robot.arm.calibration at this arm's file",
                )
            )
        else:
            checks.append(Check("calibration vs EEPROM", "ok", f"{arm.calibration} matches every servo"))
    except UserError as exc:  # DeviceError too: a servo that does not answer, a port that cannot open
        checks.append(Check("servos" if not checks else "calibration vs EEPROM", "missing", str(exc)))
    finally:
        bus.close()
    return checks


def check_bundle(config: Config) -> list[Check]:
    """The variant the engine would run: its files' hashes and its accuracy gates."""
    policy = config.policy
    if policy.engine not in ("onnxruntime", "tensorrt") or policy.bundle is None:
        return []
    from policy_runtime.bundle import open_bundle

    engine_format = "onnx" if policy.engine == "onnxruntime" else "tensorrt"
    try:
        manifest, variant, _ = open_bundle(
            policy.bundle, policy.precision, engine_format, policy.force_unverified, policy.checkpoint_sha256
        )
    except UserError as exc:
        return [Check("policy bundle", "missing", str(exc))]
    status = manifest.variants[variant].status
    chunk = manifest.variants[variant].verification.get("chunk_cosine")
    figures = f", chunk cosine {chunk:.5f}" if isinstance(chunk, float) else ""
    return [Check("policy bundle", "ok", f"{policy.bundle} variant '{variant}' {status}{figures}")]


def check_power_mode() -> list[Check]:
    """The Jetson's nvpmodel mode (MAXN, mode 0, for the controller), where nvpmodel exists."""
    nvpmodel = shutil.which("nvpmodel")
    if nvpmodel is None:
        return []
    try:
        done = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("power mode", "optional", f"nvpmodel -q failed: {exc}", "sudo nvpmodel -q")]
    match = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", done.stdout)
    if match is None:
        return [
            Check(
                "power mode",
                "optional",
                f"nvpmodel -q said: {done.stdout.strip()[:80]!r}",
                "sudo nvpmodel -q",
            )
        ]
    name, mode = match.group(1), int(match.group(2))
    if mode == 0 or "MAXN" in name.upper():
        return [Check("power mode", "ok", f"nvpmodel {name} (mode {mode})")]
    return [
        Check(
            "power mode",
            "optional",
            f"nvpmodel {name} (mode {mode}): inference runs slower than at MAXN",
            "sudo nvpmodel -m 0 && sudo jetson_clocks (deploy/JETSON.md)",
        )
    ]


def check_brltty(config: Config, root: Path = Path("/"), proc: Path = Path("/proc")) -> list[Check]:
    """brltty (Ubuntu's braille daemon) claims CH340/CH341 USB serial adapters through its udev rule, and the
    servo adapter's port disappears a second after it is plugged in."""
    if config.robot.arm.driver != "feetech":
        return []
    installed = [str(root / f) for f in BRLTTY_FILES if (root / f).exists()]
    running = []
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "brltty":
                running.append(comm.parent.name)
        except OSError:  # the process ended meanwhile
            continue
    if not installed and not running:
        return [Check("brltty", "ok", "not installed (it would take the servo adapter)")]
    what = f"running (pid {', '.join(running)})" if running else "installed"
    return [
        Check(
            "brltty",
            "missing",
            f"brltty is {what}: it claims CH340/CH341 serial adapters, the SO-101's ({', '.join(installed) or 'process only'})",
            "sudo systemctl stop brltty-udev brltty; sudo apt remove brltty (or mask its udev rule)",
        )
    ]


def robot_checks(config: Config, root: Path, offline: bool) -> list[Check]:
    return [
        *check_go2_state(config, offline),
        *check_servos(config, offline),
        *check_bundle(config),
        *check_power_mode(),
        *check_brltty(config, root),
    ]
