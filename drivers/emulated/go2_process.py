"""Runs a `Go2Emulator` in a child process (a separate DDS participant, as the robot is), controlled
through a pipe: set faults, read the pose and the received requests, stop. The child gets
CYCLONEDDS_URI for its interface, and `close()` (or leaving the `with` block) ends it."""

from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import asdict

from anchorvla.errors import DeviceError
from drivers.unitree.dds_config import dds_config_xml


def _child(conn, options: dict) -> None:
    os.environ["CYCLONEDDS_URI"] = dds_config_xml(options.get("interface", "lo"))
    from drivers.emulated.go2 import Go2Emulator, Go2Faults
    from drivers.emulated.go2_body import BodyLimits

    limits = BodyLimits(**options.pop("limits")) if "limits" in options else None
    faults = Go2Faults(**options.pop("faults")) if "faults" in options else None
    emulator = Go2Emulator(limits=limits, faults=faults, **options)
    emulator.start()
    conn.send(("started", None))
    try:
        while True:
            command, arg = conn.recv()
            if command == "stop":
                break
            if command == "faults":
                for key, value in arg.items():
                    setattr(emulator.faults, key, value)
                conn.send(("ok", None))
            elif command == "pose":
                conn.send(("ok", emulator.pose()))
            elif command == "mode":
                conn.send(("ok", emulator.mode()))
            elif command == "received":
                conn.send(("ok", [asdict(r) for r in emulator.received]))
    finally:
        emulator.stop()
        conn.send(("stopped", None))


class Go2EmulatorProcess:
    """`Go2Emulator(**options)` in a child process. Options are Go2Emulator's keyword arguments, with
    `limits` and `faults` as dicts."""

    def __init__(self, **options):
        self.options = options
        self._conn = None
        self._process = None

    def start(self, timeout_s: float = 20.0) -> None:
        ctx = mp.get_context("spawn")  # no fork of a process that may already run DDS threads
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=_child, args=(child_conn, dict(self.options)), daemon=True)
        self._process.start()
        self._expect("started", timeout_s)

    def _expect(self, status: str, timeout_s: float = 5.0):
        if not self._conn.poll(timeout_s):
            raise DeviceError(f"emulated Go2 process did not answer within {timeout_s:g} s")
        got, value = self._conn.recv()
        if got != status:
            raise DeviceError(f"emulated Go2 process answered {got!r}, expected {status!r}")
        return value

    def _ask(self, command: str, arg=None):
        self._conn.send((command, arg))
        return self._expect("ok")

    def set_faults(self, **faults) -> None:
        self._ask("faults", faults)

    def pose(self) -> tuple[float, float, float]:
        return self._ask("pose")

    def mode(self) -> int:
        return self._ask("mode")

    def received(self) -> list[dict]:
        return self._ask("received")

    def close(self) -> None:
        if self._process is None:
            return
        try:
            if self._process.is_alive():
                self._conn.send(("stop", None))
                self._conn.poll(5.0)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2.0)
        self._process = None

    def __enter__(self) -> Go2EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
