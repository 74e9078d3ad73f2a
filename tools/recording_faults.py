"""Process-level recording faults, for `anchorvla bench faults` and the tests: the service runs in a child
process (`anchorvla service run` on configs/standin.yaml, recording with images on), and the fault hits the
whole process or its disk.

- SIGKILL while recording: the child records for N s after it sent READY=1 and is SIGKILLed; the episode it
  leaves (parts, see onboard/episode_schema.py) is read back and replayed. Passes with >= N - 2 s of rows,
  every frame index in order, and the replay's decisions identical to the recorded ones.
- Disk full while recording: the recording root is a 256 kB tmpfs (mounting needs root; skipped with a line
  saying so otherwise). Passes when `ctl status` shows the recording stopped with "disk full", the fast loop
  goes on ticking with no fault latched, the log has exactly one warning about it and no error, and SIGTERM
  ends the child with exit 0 within the unit's TimeoutStopSec (as `service install` writes it for the config).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from onboard.config import load_config
from onboard.episode_store import episode_paths, parts_dir, read_episode
from onboard.service import unit_stop_timeout_s
from tools.replay import replay

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "configs" / "standin.yaml"
LOST_S = 2.0  # the most a killed recording may lose (issue 19)
DISK_SIZE = "256k"  # fills in a few seconds (parts carry ~20 kB of footer and metadata each)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


class ServiceChild:
    """`anchorvla service run` in a child process: READY=1 through our own NOTIFY_SOCKET, `status` through its
    control socket, its log in a file. Leaving the `with` block ends it (SIGKILL if still running)."""

    def __init__(self, workdir: Path, recording_root: Path):
        self.workdir = workdir
        self.control = workdir / "control.sock"
        overrides = {
            "service": {
                "start_idle": False,
                "control": {"socket": str(self.control), "group": None, "allowed_uids": [os.getuid()]},
            },
            "recording": {"enabled": True, "root": str(recording_root), "images": True},
        }
        self.config = workdir / "service.yaml"
        self.config.write_text(yaml.safe_dump(_merge(yaml.safe_load(STANDIN.read_text()), overrides)))
        self.log = workdir / "service.log"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(workdir / "notify.sock"))
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServiceChild:
        env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(self.workdir / "notify.sock")}
        env.pop("WATCHDOG_USEC", None)
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


def _row(name: str, expected: str, ok: bool, reaction: str, **details) -> dict:
    """A row for bench_faults' table (no commands are audited here: the child's own envelope runs)."""
    return {
        "scenario": name,
        "expected": expected,
        "detected_after_ms": None,
        "reaction": reaction,
        "out_of_envelope": "-",
        "violations": [],
        "faults": [],
        "commands_audited": "-",
        "ok": ok,
        **details,
    }


def sigkill_while_recording(seconds: float = 60.0) -> dict:
    name, expected = (
        "SIGKILL while recording",
        f"episode reads back with >= {seconds - LOST_S:g} s of {seconds:g} s",
    )
    with tempfile.TemporaryDirectory(prefix="avla-kill-") as tmp:
        workdir, root = Path(tmp), Path(tmp) / "episodes"
        with ServiceChild(workdir, root) as child:
            child.wait_ready()
            ready = time.monotonic()
            time.sleep(seconds)
            child.kill()
            recorded_for = time.monotonic() - ready
        data = episode_paths(root, 0)[0]
        if not parts_dir(data).is_dir():
            return _row(name, expected, False, "no parts left on disk", killed_after_s=recorded_for)
        meta, frames, events = read_episode(data)
        rows_s = len(frames) / float(meta["anchorvla.fps"])
        in_order = [r["frame_index"] for r in frames] == list(range(len(frames)))
        report = replay(data)
        ok = rows_s >= seconds - LOST_S and in_order and report.identical and report.frames == len(frames)
        reaction = (
            f"{rows_s:.1f} s of rows read back after a kill at {recorded_for:.1f} s "
            f"(lost {recorded_for - rows_s:.1f} s), {len(events)} events; replay "
            + ("identical" if report.identical else f"differs on {report.differing_frames} frames")
            + ("" if in_order else "; frame indexes out of order")
        )
        return _row(
            name,
            expected,
            ok,
            reaction,
            killed_after_s=round(recorded_for, 2),
            rows=len(frames),
            rows_s=round(rows_s, 2),
            events=len(events),
        )


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `path`; the reason it could not, or None."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        return "no mount command"
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def _wait_stopped(child: ServiceChild, timeout_s: float) -> dict:
    end = time.monotonic() + timeout_s
    status = child.status()
    while status["recording"]["state"] != "stopped" and time.monotonic() < end:
        time.sleep(0.1)
        status = child.status()
    return status


def disk_full_while_recording() -> dict:
    name = "disk full while recording"
    expected = "recording stopped (ctl status, one warning); ticks go on; exit 0 within TimeoutStopSec"
    workdir = Path(tempfile.mkdtemp(prefix="avla-full-"))
    disk = workdir / "disk"
    disk.mkdir()
    refused = _mount_tmpfs(disk, DISK_SIZE)
    if refused is not None:
        shutil.rmtree(workdir, ignore_errors=True)
        return _row(
            name, expected, True, f"SKIPPED: cannot mount a tmpfs here ({refused}; needs root)", skipped=True
        )
    limit_s = unit_stop_timeout_s(load_config(STANDIN))  # the child's safety.stop is STANDIN's
    try:
        with ServiceChild(workdir, disk / "episodes") as child:
            child.wait_ready()
            status = _wait_stopped(child, timeout_s=30.0)
            recording = status["recording"]
            time.sleep(1.0)
            after = child.status()
            rc, stop_s = child.terminate(timeout_s=limit_s + 10.0)
        lines = child.log_lines()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    warnings = [x for x in lines if "WARNING" in x and "recording stopped" in x]
    errors = [x for x in lines if " ERROR " in x or "Traceback" in x]
    ticked = after["ticks"] - status["ticks"]
    checks = {
        "status shows it": recording["state"] == "stopped" and "disk full" in recording.get("reason", ""),
        "ticks go on": after["state"] == "running" and not after["faults"] and ticked >= 10,
        "one warning": len(warnings) == 1 and not errors,
        "bounded stop": rc == 0 and stop_s <= limit_s,
    }
    failed = [k for k, good in checks.items() if not good]
    reaction = (
        f"ctl status: recording {recording['state']} ({recording.get('reason', '-')}); "
        f"{ticked} ticks in the next 1 s, state {after['state']}; {len(warnings)} warning(s), "
        f"{len(errors)} error(s); SIGTERM -> exit {rc} in {stop_s:.1f} s (TimeoutStopSec {limit_s:g} s)"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return _row(
        name,
        expected,
        not failed,
        reaction,
        recording=recording,
        ticks_after_stop_1s=ticked,
        warnings=warnings,
        errors=errors[:3],
        exit_code=rc,
        stop_s=round(stop_s, 2),
        timeout_stop_s=limit_s,
    )
