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

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from onboard.config import load_config
from onboard.episode_store import episode_paths, parts_dir, read_episode
from onboard.service import unit_stop_timeout_s
from tools.replay import replay
from tools.service_child import STANDIN, ServiceChild

LOST_S = 2.0  # the most a killed recording may lose (issue 19)
DISK_SIZE = "256k"  # fills in a few seconds (parts carry ~20 kB of footer and metadata each)


def recording_child(workdir: Path, recording_root: Path) -> ServiceChild:
    """The service in a child process, recording every episode with images under `recording_root`."""
    return ServiceChild(workdir, {"recording": {"enabled": True, "root": str(recording_root), "images": True}})


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
        with recording_child(workdir, root) as child:
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
        with recording_child(workdir, disk / "episodes") as child:
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
