"""Process-level config faults, for `anchorvla bench faults` and the tests: each bad config file is run as
`anchorvla run --config FILE` in a child process, which must exit 2 with one line on stderr naming the file and
the problem, no traceback, and nothing on stdout (no device was opened, nothing ran)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SAFETY = "safety:\n  joints:\n    gripper: {min: -0.2, max: 1.7}\n"

# name -> (file content, a fragment the one line must hold)
BAD_CONFIGS: dict[str, tuple[bytes, str]] = {
    "section given twice": (
        (_SAFETY + "control:\n  rate_hz: 15\nsafety:\n  nonfinite_chunks: 3\n").encode(),
        "key 'safety' is given twice",
    ),
    "infinite joint limit": (
        b"safety:\n  joints:\n    elbow_flex: {min: -.inf, max: .inf}\n",
        "safety.joints.elbow_flex.min: must be a finite number",
    ),
    "NaN rest pose": (
        b"safety:\n  stop:\n    rest_pose: {elbow_flex: .nan}\n",
        "safety.stop.rest_pose.elbow_flex: must be a finite number",
    ),
    "empty file": (b"", "the file has no sections"),
    "comments only": (b"# robot: tbd\n", "the file has no sections"),
    "not UTF-8": (b"policy:\n  instruction: caf\xe9\n", "line 2: not UTF-8 text"),
    "rate too low": (b"control:\n  rate_hz: 1\n", "control.rate_hz: at least 5 Hz"),
    "unknown key": (b"control:\n  rate_hx: 15\n", "control.rate_hx: unknown key"),
}


def run_bad_config(
    content: bytes, command: tuple[str, ...] = ("run",)
) -> tuple[Path, subprocess.CompletedProcess]:
    """`anchorvla COMMAND --config FILE --duration 1` on a file holding `content`."""
    with tempfile.TemporaryDirectory(prefix="avla-config-") as tmp:
        path = Path(tmp) / "robot.yaml"
        path.write_bytes(content)
        done = subprocess.run(
            [sys.executable, "-m", "anchorvla.cli", *command, "--config", str(path), "--duration", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
        )
    return path, done


def refusal_problem(path: Path, fragment: str, done: subprocess.CompletedProcess) -> str | None:
    """What is wrong with the way the child refused the file (None: exit 2, one line naming file and problem)."""
    lines = done.stderr.strip().splitlines()
    if done.returncode != 2:
        return f"exit {done.returncode}"
    if "Traceback" in done.stderr or len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if str(path) not in lines[0] or fragment not in lines[0]:
        return f"the line does not name the file and '{fragment}': {lines[0]}"
    if done.stdout:
        return "printed on stdout (it ran)"
    return None


def config_errors() -> dict:
    """One table row for every bad config in BAD_CONFIGS."""
    failed: list[str] = []
    slowest_ms = 0.0
    for name, (content, fragment) in BAD_CONFIGS.items():
        t0 = time.monotonic()
        path, done = run_bad_config(content)
        slowest_ms = max(slowest_ms, (time.monotonic() - t0) * 1e3)
        problem = refusal_problem(path, fragment, done)
        if problem is not None:
            failed.append(f"{name}: {problem}")
    reaction = (
        f"{len(BAD_CONFIGS)}/{len(BAD_CONFIGS)} refused with exit 2 and one line (slowest {slowest_ms:.0f} ms)"
        if not failed
        else "; ".join(failed)
    )
    return {
        "scenario": "config errors",
        "expected": f"each of {len(BAD_CONFIGS)} bad files ({', '.join(BAD_CONFIGS)}): exit 2, one line, no traceback",
        "detected_after_ms": None,
        "reaction": reaction,
        "out_of_envelope": "-",
        "violations": [],
        "faults": [],
        "commands_audited": "-",
        "ok": not failed,
    }
