"""`anchorvla doctor`: what this machine has, what a robot still needs, and how to get it.

Each check reports `ok`, `missing` (the robot cannot run without it), or `optional` (works without it,
less well), with the detail found and, where not ok, the fix. With `--config` the checks follow the
config (a feetech arm needs the servo SDK and its port, an ONNX engine needs onnxruntime, ...); without,
they assume the real robot (configs for the Jetson: feetech arm, Go2 base, RealSense cameras, TensorRT).
`--root` looks for the installed files under another directory (as `service install --root` wrote them).

Every import is guarded (a broken numpy or onnxruntime is one line, tools/doctor_checks.py), numpy, pydantic and
PyYAML first: without them no config can be read, and the doctor says so instead of failing. For the robot it
also listens for the Go2's state, pings the servos, compares the calibration with their EEPROM, checks the bundle
variant the engine would run, the power mode and brltty (tools/doctor_robot.py); `--offline` skips the probes.
"""

from __future__ import annotations

import argparse
import grp
import importlib
import json
import os
import platform
import pwd
import resource
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from anchorvla.errors import UserError
from tools.doctor_checks import Check, import_check, version

if TYPE_CHECKING:
    from onboard.config import Config

JETSON_GUIDE = "deploy/JETSON.md"
_package = import_check
# What reading a config needs: checked before anything else imports them.
CORE = (
    ("numpy", "numpy", "numpy", "pip install numpy"),
    ("pydantic", "pydantic", "pydantic", "pip install pydantic"),
    ("pyyaml", "yaml", "PyYAML", "pip install pyyaml"),
)


def check_core() -> list[Check]:
    return [import_check(name, module, dist, True, fix) for name, module, dist, fix in CORE]


def _robot_config() -> Config:
    """What the checks assume without --config: the real robot on a Jetson."""
    from onboard.config import Config

    return Config.model_validate(
        {
            "robot": {
                "arm": {"driver": "feetech", "port": "/dev/so101"},
                "base": {"driver": "go2", "interface": "eth0"},
                "cameras": [
                    {"name": "third_person", "driver": "realsense"},
                    {"name": "wrist", "driver": "realsense"},
                ],
            },
            "policy": {"engine": "tensorrt"},
            "service": {"realtime_priority": 50, "cpu_affinity": [1, 2, 3]},
            "recording": {"enabled": True},
        }
    )


def _is_jetson() -> str | None:
    release = Path("/etc/nv_tegra_release")
    if release.exists():
        return release.read_text().splitlines()[0].strip()
    model = Path("/proc/device-tree/model")
    if model.exists() and "jetson" in model.read_text(errors="replace").lower():
        return model.read_text(errors="replace").strip("\0\n ")
    return None


def check_platform() -> list[Check]:
    checks = []
    py = sys.version_info
    py_ok = py >= (3, 10)
    checks.append(
        Check(
            "python",
            "ok" if py_ok else "missing",
            f"{platform.python_implementation()} {platform.python_version()}",
            "" if py_ok else "Python >= 3.10 (JetPack 6 ships 3.10)",
        )
    )
    jetson = _is_jetson()
    checks.append(
        Check(
            "board",
            "ok" if jetson else "optional",
            jetson or f"not a Jetson ({platform.machine()}): fine for development and the emulated robot",
            "" if jetson else f"on the robot: JetPack 6 on the Jetson, see {JETSON_GUIDE}",
        )
    )
    return checks


def check_packages(config: Config) -> list[Check]:
    arm, base, cams = config.robot.arm, config.robot.base, config.robot.cameras
    engine = config.policy.engine
    guide = f"see {JETSON_GUIDE}"
    checks = [
        _package("uvloop", "uvloop", "uvloop", False, "pip install uvloop (tighter loop timers)"),
        _package(
            "servo SDK",
            "scservo_sdk",
            "feetech-servo-sdk",
            arm.driver in ("feetech", "emulated"),
            "pip install feetech-servo-sdk pyserial",
        ),
        _package(
            "pyserial", "serial", "pyserial", arm.driver in ("feetech", "emulated"), "pip install pyserial"
        ),
        _package(
            "cyclonedds",
            "cyclonedds",
            "cyclonedds",
            base.driver in ("go2", "emulated"),
            f"pip install cyclonedds (aarch64 wheel), {guide}",
        ),
        _package(
            "librealsense",
            "pyrealsense2",
            "pyrealsense2",
            any(c.driver in ("realsense", "bag") for c in cams),
            f"build librealsense with Python bindings on the Jetson, {guide}",
        ),
        _package(
            "PyAV",
            "av",
            "av",
            any(c.driver == "uvc" for c in cams),
            "pip install 'anchorvla-onboard[robot]' (UVC cameras)",
        ),
        _package(
            "pyarrow",
            "pyarrow",
            "pyarrow",
            config.recording.enabled,
            "pip install pyarrow (episode recording)",
        ),
        _package(
            "rerun-sdk",
            "rerun",
            "rerun-sdk",
            config.telemetry.liveview.enabled,
            "pip install 'anchorvla-onboard[liveview]' (live view)",
        ),
    ]
    checks.append(_onnxruntime_check(engine))
    checks.append(
        _package(
            "TensorRT",
            "tensorrt",
            "tensorrt",
            engine == "tensorrt",
            f"comes with JetPack (apt install nvidia-tensorrt, python3-libnvinfer), {guide}",
        )
    )
    checks.append(_torch_check(engine))
    return checks


def _onnxruntime_check(engine: str) -> Check:
    needed = engine in ("onnxruntime", "tensorrt")
    imported = _package(
        "onnxruntime",
        "onnxruntime",
        "onnxruntime",
        needed,
        f"NVIDIA's onnxruntime-gpu wheel for JetPack, see {JETSON_GUIDE}",
    )
    if imported.status != "ok":
        return imported
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    gpu = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    detail = f"onnxruntime {onnxruntime.__version__}, providers: {', '.join(providers)}"
    if gpu:
        return Check("onnxruntime", "ok", detail)
    return Check(
        "onnxruntime GPU",
        "optional",
        detail + " (CPU only)",
        f"on the robot: onnxruntime-gpu for JetPack (CUDA/TensorRT providers), see {JETSON_GUIDE}",
    )


def _torch_check(engine: str) -> Check:
    needed = engine == "torch"
    imported = _package(
        "torch", "torch", "torch", needed, f"NVIDIA's torch wheel for JetPack, see {JETSON_GUIDE}"
    )
    if imported.status != "ok":
        return imported
    torch = importlib.import_module("torch")
    installed = version("torch")
    if torch.cuda.is_available():
        return Check(
            "torch", "ok", f"torch {installed}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}"
        )
    return Check(
        "torch CUDA",
        "missing" if needed else "optional",
        f"torch {installed} without CUDA",
        f"NVIDIA's torch wheel for JetPack (not PyPI's), see {JETSON_GUIDE}",
    )


def check_devices(config: Config) -> list[Check]:
    checks = []
    arm = config.robot.arm
    if arm.driver == "feetech":
        port = Path(arm.port or "/dev/so101")
        by_id = (
            sorted(p.name for p in Path("/dev/serial/by-id").glob("*"))
            if Path("/dev/serial/by-id").is_dir()
            else []
        )
        found = (
            f"; adapters plugged in: {', '.join(by_id)}" if by_id else "; no USB serial adapter plugged in"
        )
        if port.exists():
            checks.append(Check("servo adapter", "ok", f"{port} -> {os.path.realpath(port)}"))
        else:
            checks.append(
                Check(
                    "servo adapter",
                    "missing",
                    f"{port} not present{found}",
                    "plug in the servo adapter; `anchorvla service install --arm-serial SERIAL` names it /dev/so101",
                )
            )
    base = config.robot.base
    if base.driver == "go2":
        iface = Path("/sys/class/net") / base.interface
        if iface.exists():
            state = (iface / "operstate").read_text().strip() if (iface / "operstate").exists() else "unknown"
            checks.append(
                Check(
                    "Go2 network",
                    "ok" if state in ("up", "unknown") else "missing",
                    f"interface {base.interface} is {state}",
                    ""
                    if state in ("up", "unknown")
                    else f"connect the Go2's Ethernet to {base.interface} (192.168.123.x)",
                )
            )
        else:
            names = ", ".join(sorted(p.name for p in Path("/sys/class/net").iterdir()))
            checks.append(
                Check(
                    "Go2 network",
                    "missing",
                    f"no interface {base.interface} (have: {names})",
                    "set robot.base.interface to the port wired to the Go2",
                )
            )
    wanted = [c for c in config.robot.cameras if c.driver == "realsense"]
    if wanted:
        count = None
        try:
            import pyrealsense2

            count = len(pyrealsense2.context().query_devices())
        except Exception:  # absent or broken: its package line says which
            pass
        if count is not None and count >= len(wanted):
            checks.append(Check("RealSense cameras", "ok", f"{count} connected, {len(wanted)} configured"))
        else:
            checks.append(
                Check(
                    "RealSense cameras",
                    "missing",
                    f"{count if count is not None else 'unknown (no pyrealsense2)'} connected, {len(wanted)} configured",
                    "plug the cameras into USB 3 ports; check `rs-enumerate-devices`",
                )
            )
    gpu = [p for p in ("/dev/nvhost-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvidia0") if Path(p).exists()]
    needs_gpu = config.policy.engine == "tensorrt"
    checks.append(
        Check(
            "GPU",
            "ok" if gpu else ("missing" if needs_gpu else "optional"),
            ", ".join(gpu) or "no GPU device nodes",
            "" if gpu else f"JetPack on the Jetson provides the iGPU, see {JETSON_GUIDE}",
        )
    )
    return checks


def check_system(config: Config, root: Path) -> list[Check]:
    checks = []
    systemd = Path("/run/systemd/system").is_dir()
    checks.append(
        Check(
            "systemd",
            "ok" if systemd else "missing",
            "running" if systemd else "not the init system here (a container or dev machine)",
            "" if systemd else "run the service on the robot's board (JetPack is systemd-based)",
        )
    )
    installs = [
        ("systemd unit", "etc/systemd/system/anchorvla-onboard.service"),
        ("udev rules", "etc/udev/rules.d/99-anchorvla.rules"),
        ("service user entry", "usr/lib/sysusers.d/anchorvla.conf"),
        ("installed config", "etc/anchorvla/onboard.yaml"),
    ]
    for name, rel in installs:
        path = root / rel
        checks.append(
            Check(
                name,
                "ok" if path.exists() else "missing",
                str(path) + ("" if path.exists() else " not found"),
                ""
                if path.exists()
                else "sudo anchorvla service install --config CONFIG (see deploy/JETSON.md)",
            )
        )
    group = config.service.control.group
    if group:
        try:
            members = grp.getgrnam(group).gr_mem
            checks.append(
                Check(
                    "operator group",
                    "ok",
                    f"group {group} exists (members: {', '.join(members) or 'none yet'})",
                )
            )
        except KeyError:
            checks.append(
                Check(
                    "operator group",
                    "missing",
                    f"group {group} does not exist",
                    "created by `anchorvla service install` (systemd-sysusers); then `sudo usermod -aG anchorvla OPERATOR`",
                )
            )
    try:
        pwd.getpwnam("anchorvla")
        checks.append(Check("service user", "ok", "user anchorvla exists"))
    except KeyError:
        checks.append(
            Check(
                "service user",
                "missing",
                "user anchorvla does not exist",
                "created by `anchorvla service install` (systemd-sysusers)",
            )
        )
    soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
    wanted = config.service.realtime_priority
    if wanted:
        ok = soft == resource.RLIM_INFINITY or soft >= wanted or os.geteuid() == 0
        checks.append(
            Check(
                "real-time priority",
                "ok" if ok else "missing",
                f"RLIMIT_RTPRIO {soft}, service.realtime_priority {wanted}",
                "" if ok else "the unit's LimitRTPRIO/CAP_SYS_NICE allow it; outside systemd: ulimit -r 90",
            )
        )
    else:
        checks.append(
            Check(
                "real-time priority",
                "optional",
                "service.realtime_priority is 0 (the fast loop runs SCHED_OTHER)",
                "set service.realtime_priority: 50 and service.cpu_affinity on the robot",
            )
        )
    if config.recording.enabled:
        target = config.recording.root
        probe = next((p for p in [target, *target.parents] if p.exists()), Path("/"))
        ok = os.access(probe, os.W_OK)
        checks.append(
            Check(
                "recording directory",
                "ok" if ok else "missing",
                f"{target} ({'writable' if ok else 'not writable'})",
                ""
                if ok
                else "the unit's StateDirectory=anchorvla creates /var/lib/anchorvla for the service user",
            )
        )
    return checks


def run_checks(config: Config, root: Path, offline: bool = False) -> list[Check]:
    from tools.doctor_robot import robot_checks

    return [
        *check_platform(),
        *check_core(),
        *check_packages(config),
        *check_devices(config),
        *robot_checks(config, root, offline),
        *check_system(config, root),
    ]


def format_checks(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:8s}  {c.name.ljust(width)}  {c.detail}")
        if c.fix:
            lines.append(f"{'':8s}  {'':{width}s}  fix: {c.fix}")
    missing = [c.name for c in checks if c.status == "missing"]
    ok = sum(c.status == "ok" for c in checks)
    lines.append("")
    lines.append(f"{ok} ok, {len(missing)} missing, {sum(c.status == 'optional' for c in checks)} optional")
    if missing:
        lines.append(f"still needed to run this config here: {', '.join(missing)}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="check for this config (default: the real robot on a Jetson)",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="look for the installed files under this directory"
    )
    parser.add_argument(
        "--offline", action="store_true", help="do not listen for the Go2 or ping the servos (probes nothing)"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything needed is missing")


def main(args: argparse.Namespace) -> int:
    core = check_core()
    if any(c.status != "ok" for c in core):  # no config can be read: say what to fix first
        checks = [*check_platform(), *core]
        checks.append(
            Check("config", "missing", "not read: it needs numpy, pydantic and PyYAML", "fix the lines above")
        )
    else:
        from onboard.config import load_config

        try:
            config = load_config(args.config) if args.config else _robot_config()
        except UserError:
            raise
        except Exception as exc:  # a package the config pulls in is broken: one line
            raise UserError(f"cannot read the config: {type(exc).__name__}: {exc}") from None
        checks = run_checks(config, args.root, args.offline)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(format_checks(checks))
    return 1 if args.strict and any(c.status == "missing" for c in checks) else 0
