"""Process-level control flood, for `anchorvla bench faults` and the tests: the service runs in a child process
(`anchorvla service run` on configs/standin.yaml, moving, its control endpoint on a Unix socket and TCP on
127.0.0.1), and clients try to starve it:

- idle TCP clients fill every TCP slot (they sent the token, then nothing), and more keep arriving;
- two workers reconnect over and over, sending the token and then garbage (not JSON, deep nesting, a lone
  surrogate, an over-long line), each answered with one error line and closed;
- idle clients fill every Unix-socket slot too.

Meanwhile an operator e-stops over the Unix socket, `trials` times (reset-fault and start between them). Passes
when every e-stop is answered with state 'estopped', the p99 of the e-stop round trip (connect, request, reply:
the fault is latched and the base's stop calls done) is within one control tick, the child's open files stay
within its connection caps, and SIGTERM still ends it with exit 0 within the unit's TimeoutStopSec.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from onboard.config import load_config
from onboard.service import unit_stop_timeout_s
from tools.service_child import STANDIN, ServiceChild

TOKEN = b"bench-faults-flood-token-0123456789"
GARBAGE = (
    b"start the robot\n",
    b"[" * 3000 + b"\n",
    b'{"cmd": "start", "instruction": "\\ud800"}\n',
    b'{"cmd": "' + b"x" * 8000 + b'"}\n',
    b"\xff\xfe\xfd\n",
)
FILE_SLACK = 8  # the child's own files that come and go (a log rotation, a DDS socket, a worker's pipe)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10.0)
    s.connect(str(path))
    return s


def _ask(s: socket.socket, payload: dict) -> dict:
    s.sendall((json.dumps(payload) + "\n").encode())
    line = s.makefile("rb").readline()
    return json.loads(line) if line else {"ok": False, "error": "closed without a reply"}


class _FloodedService(ServiceChild):
    """The service in a child process with TCP control on a free port and the bench's token."""

    def __init__(self, workdir: Path):
        self.port = _free_port()
        token = workdir / "token"
        token.write_bytes(TOKEN + b"\n")
        token.chmod(0o600)
        control = {"tcp_port": self.port, "token_file": str(token)}
        super().__init__(workdir, {"service": {"control": control}}, notify=False)
        self.socket = self.control

    def wait_listening(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}): {self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                _unix(self.socket).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the service did not listen within {timeout_s:.0f} s: {self.tail()}")


def _garbage_worker(port: int, stop: threading.Event, counts: dict) -> None:
    """Token, garbage, the error line, closed; again. Counts the replies by kind."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(TOKEN + b"\n" + GARBAGE[i % len(GARBAGE)])
                reply = json.loads(s.makefile("rb").readline() or b"{}")
        except (OSError, ValueError):
            counts["errors"] += 1
            continue
        error = str(reply.get("error", ""))
        counts["busy" if "busy" in error else "answered" if error else "other"] += 1


def control_flood(tcp_clients: int = 64, trials: int = 30) -> dict:
    name = "control flood"
    config = load_config(STANDIN)
    period_ms = 1e3 / config.control.rate_hz
    max_clients = config.service.control.max_clients
    expected = (
        f"{tcp_clients} TCP clients (idle, garbage) + a full Unix socket: every Unix e-stop served, "
        f"p99 <= 1 tick ({period_ms:.0f} ms); open files within the caps; exit 0 on SIGTERM"
    )
    latencies: list[float] = []
    failures: list[str] = []
    counts = {"busy": 0, "answered": 0, "other": 0, "errors": 0}
    with tempfile.TemporaryDirectory(prefix="avla-flood-") as tmp, _FloodedService(Path(tmp)) as child:
        child.wait_listening()
        time.sleep(0.5)
        files_before = _open_files(child.process.pid)
        held: list[socket.socket] = []
        stop = threading.Event()
        workers = [
            threading.Thread(target=_garbage_worker, args=(child.port, stop, counts)) for _ in range(2)
        ]
        try:
            for _ in range(max_clients - len(workers)):  # idle, authenticated: they hold TCP slots
                s = socket.create_connection(("127.0.0.1", child.port), timeout=10)
                s.sendall(TOKEN + b"\n")
                held.append(s)
            time.sleep(0.2)
            for worker in workers:
                worker.start()
            for _ in range(tcp_clients - len(held)):  # and more, idle without a word: refused at once
                held.append(socket.create_connection(("127.0.0.1", child.port), timeout=10))
            held += [_unix(child.socket) for _ in range(max_clients)]  # the Unix socket full as well
            time.sleep(0.5)
            rng = np.random.default_rng(0)
            for trial in range(trials):
                time.sleep(rng.uniform(0.0, period_ms / 1e3) + 0.1)  # a random moment of the tick
                t0 = time.perf_counter()
                with _unix(child.socket) as s:
                    reply = _ask(s, {"cmd": "estop", "reason": f"flood trial {trial}"})
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    if reply.get("state") != "estopped":
                        failures.append(f"e-stop {trial}: {reply}")
                    for cmd in ("reset-fault", "start"):
                        if not _ask(s, {"cmd": cmd}).get("ok"):
                            failures.append(f"{cmd} after e-stop {trial} refused")
            files_during = _open_files(child.process.pid)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=10)
            for s in held:
                s.close()
        rc, stop_s = child.terminate(unit_stop_timeout_s(load_config(child.config)))
        tail = child.tail()
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99))
    grown = files_during - files_before
    file_cap = 2 * max_clients + FILE_SLACK
    if p99 > period_ms:
        failures.append(f"p99 {p99:.1f} ms > one tick")
    if grown > file_cap:
        failures.append(f"open files grew by {grown} (> {file_cap})")
    if rc != 0:
        failures.append(f"SIGTERM: exit {rc} after {stop_s:.1f} s ({tail})")
    if counts["answered"] == 0:
        failures.append("no garbage line was answered")
    reaction = (
        f"{trials - sum('e-stop' in f for f in failures)}/{trials} e-stops served, p50/p99 {p50:.1f}/{p99:.1f} ms; "
        f"garbage answered {counts['answered']}x, busy {counts['busy']}x; open files +{grown}; "
        f"SIGTERM exit {rc} in {stop_s:.1f} s"
    )
    return {
        "scenario": name,
        "expected": expected,
        "detected_after_ms": round(p99, 1),
        "reaction": reaction + ("" if not failures else " -- " + "; ".join(failures[:3])),
        "out_of_envelope": "-",
        "violations": [],
        "faults": [],
        "commands_audited": "-",
        "ok": not failures,
        "problems": failures,
        "estop_latency_ms": {"p50": round(p50, 2), "p99": round(p99, 2), "trials": trials},
    }
