"""Shared by the service/control/recorder tests: a sim config in a temp dir, and `serve` run in this process
(main thread, so the runtime's signal handlers work) while a client script runs in a thread."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import yaml

from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.runtime import Devices
from onboard.service import Notifier, serve

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / "configs" / "standin.yaml"


def short_dir() -> Path:
    """Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer. Removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="avla-", dir="/tmp"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def sim_config(sock_dir: Path, **sections):
    """configs/standin.yaml with a faster stand-in engine, the control socket in `sock_dir`, and `sections` merged in."""
    base = {
        "policy": {"standin": {"compute_ms": 40}},
        "service": {"control": {"socket": str(sock_dir / "control.sock"), "group": "root"}},
    }
    return load_config(SIM, _deep_merge(base, sections))


def write_config(path: Path, **sections) -> Path:
    """configs/standin.yaml with `sections` merged in, written to `path` (for the command line: one block per
    section, since a section given twice is refused)."""
    path.write_text(yaml.safe_dump(_deep_merge(yaml.safe_load(SIM.read_text()), sections)))
    return path


def devices_and_engine(config):
    return Devices(build_arm(config), build_base(config), build_cameras(config)), build_engine(config)


def run_serve(
    config, duration_s: float, client=None, notifier: Notifier | None = None, devices=None, engine=None
) -> dict:
    """Run the service main loop for `duration_s`; `client()` runs in a thread meanwhile. Re-raises its errors."""
    if devices is None:
        devices, default_engine = devices_and_engine(config)
        engine = engine or default_engine
    errors: list[BaseException] = []

    def guarded():
        try:
            client()
        except BaseException as exc:  # surfaced in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True) if client else None
    if thread:
        thread.start()
    try:
        result = asyncio.run(serve(config, devices, engine, duration_s, notifier=notifier))
    finally:
        if thread:
            thread.join(timeout=30)
    if errors:
        raise errors[0]
    return result


def wait_for_tcp(port: int, timeout_s: float = 10.0) -> None:
    """Until the controller's TCP endpoint on 127.0.0.1 accepts (it opens just after the Unix socket)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def wait_for_socket(path: Path, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
                return
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.02)
    raise TimeoutError(f"no control socket at {path}")
