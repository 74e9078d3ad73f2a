"""`anchorvla service run` in a child process, for the process-level fault scenarios (tools/recording_faults.py,
tools/control_flood.py): the stand-in config with the scenario's settings over it, READY=1 through our own
NOTIFY_SOCKET, `status` through its control socket, its log in a file. Leaving the `with` block ends it (SIGKILL
if still running)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "configs" / "standin.yaml"


def merged(base: dict, extra: dict) -> dict:
    """`base` with `extra` laid over it, section by section."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


class ServiceChild:
    """`overrides` go over configs/standin.yaml; the control socket is `workdir/control.sock`, the service starts
    moving (not idle). `notify=False`: no NOTIFY_SOCKET (a scenario that never reads it must not let the service's
    notifications fill the socket's queue, which blocks the sender); `wait_ready` then cannot be used."""

    def __init__(self, workdir: Path, overrides: dict, notify: bool = True):
        self.workdir = workdir
        self.control = workdir / "control.sock"
        own = {
            "service": {
                "start_idle": False,
                "control": {"socket": str(self.control), "group": None, "allowed_uids": [os.getuid()]},
            }
        }
        self.config = workdir / "service.yaml"
        settings = merged(merged(yaml.safe_load(STANDIN.read_text()), own), overrides)
        self.config.write_text(yaml.safe_dump(settings))
        self.log = workdir / "service.log"
        self._notify = None
        if notify:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(str(workdir / "notify.sock"))
        self.process: subprocess.Popen | None = None

    def __enter__(self):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("WATCHDOG_USEC", None)
        env.pop("NOTIFY_SOCKET", None)
        if self._notify is not None:
            env["NOTIFY_SOCKET"] = str(self.workdir / "notify.sock")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "anchorvla.cli", "service", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._notify is not None:
            self._notify.close()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited ({self.process.returncode}) before READY=1: {self.tail()}"
                )
            self._notify.settimeout(0.2)
            try:
                if b"READY=1" in self._notify.recv(4096).split(b"\n"):
                    return
            except TimeoutError:
                pass
        raise RuntimeError(f"no READY=1 within {timeout_s:.0f} s: {self.tail()}")

    def status(self) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(self.control))
            s.sendall(b'{"cmd": "status"}\n')
            reply = json.loads(s.makefile("rb").readline())
        if not reply.get("ok"):
            raise RuntimeError(f"status refused: {reply}")
        return reply

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout_s: float) -> tuple[int | None, float]:
        """SIGTERM; (exit code, seconds until it exited), exit code None if still running after timeout_s."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            rc = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        return rc, time.monotonic() - start

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def tail(self) -> str:
        return " | ".join(self.log_lines()[-3:])
