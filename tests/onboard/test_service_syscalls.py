"""The unit's SystemCallFilter= does not break the controller: `anchorvla service run` on the emulated robot (the
SO-101 driver on a pty, the Go2 client on DDS over loopback, ONNX Runtime, SCHED_FIFO, the control socket) runs
under the same allow list, every other system call failing with EPERM as SystemCallErrorNumber= makes it, and
answers an e-stop. The filter is built with libseccomp from `systemd-analyze syscall-filter`, as systemd does."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.service_helpers import short_dir, wait_for_socket

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "anchorvla-onboard.service"
SECCOMP = ctypes.util.find_library("seccomp")
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or SECCOMP is None, reason="needs systemd-analyze and libseccomp"
)


def allowed_syscalls(groups: list[str]) -> set[str]:
    """The system call names of SystemCallFilter= groups, nested groups expanded."""
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    members: dict[str, list[str]] = {}
    current = None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = members.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    names: set[str] = set()
    todo = list(groups)
    while todo:
        item = todo.pop()
        if item.startswith("@"):
            todo.extend(members[item])
        else:
            names.add(item)
    return names


def apply_filter(names: set[str]) -> None:
    """In the child before exec: allow `names`, every other system call fails with EPERM."""
    lib = ctypes.CDLL(SECCOMP)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO | errno.EPERM)
    for name in names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # a name this architecture lacks
            lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, number, 0)
    if lib.seccomp_load(ctx) != 0:
        os._exit(97)


def unit_filter() -> set[str]:
    groups = re.search(r"^SystemCallFilter=(.+)$", UNIT.read_text(), re.MULTILINE).group(1).split()
    names = allowed_syscalls(groups)
    assert "sched_setscheduler" in names and "execve" in names  # SCHED_FIFO, and systemd's exec of the unit
    return names


def filtered(cmd: list[str], names: set[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "anchorvla.cli", *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: apply_filter(names),
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """(stdout, stderr) of a `filtered` process once it exits; killed if it outlives timeout_s or the test fails."""
    try:
        return proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fifo_permitted() -> bool:
    """Whether this machine lets us take SCHED_FIFO at all (root or CAP_SYS_NICE), filter or not."""
    probe = "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(20))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0


def check_clean(proc: subprocess.Popen, err: str) -> None:
    assert proc.returncode == 0, err[-2000:]
    assert "Operation not permitted" not in err and "Traceback" not in err, err[-2000:]
    if fifo_permitted():  # then the filter must not take it away (the controller warns when refused)
        assert "real-time priority 20 not permitted" not in err, err[-2000:]


def test_the_policy_on_the_emulated_robot_runs_under_the_units_system_call_filter():
    """configs/sim.yaml: the demo policy through ONNX Runtime, the pty servo bus, DDS, SCHED_FIFO."""
    d = short_dir()
    settings = yaml.safe_load((REPO / "configs" / "sim.yaml").read_text())
    settings["policy"]["bundle"] = str(REPO / "policies" / "demo" / "bundle")
    settings["robot"]["base"]["domain_id"] = 131
    (d / "sim.yaml").write_text(yaml.safe_dump(settings))
    proc = filtered(["run", "--config", str(d / "sim.yaml"), "--duration", "3"], unit_filter())
    out, err = finish(proc, 120)
    check_clean(proc, err)
    assert "chunks / failures" in out and "/ 0\n" in out.split("chunks / failures")[1][:40]


def test_the_service_answers_an_estop_under_the_units_system_call_filter():
    """`service run` with the control socket (SO_PEERCRED, chown) on the emulated arm and base, stand-in policy
    and cameras (the synthetic ones render the simulator's world, which only `run` makes)."""
    d = short_dir()
    settings = yaml.safe_load((REPO / "configs" / "sim.yaml").read_text())
    settings["policy"] = {"engine": "standin", "standin": {"compute_ms": 20}}
    settings["robot"]["base"]["domain_id"] = 137
    settings.pop("sim")
    settings["robot"]["cameras"] = [
        {"name": n, "driver": "standin", "width": 64, "height": 64} for n in ("a", "b")
    ]
    settings["service"] = {**settings["service"], "control": {"socket": str(d / "c.sock"), "group": "root"}}
    (d / "svc.yaml").write_text(yaml.safe_dump(settings))
    proc = filtered(["service", "run", "--config", str(d / "svc.yaml"), "--duration", "6"], unit_filter())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ctl = [sys.executable, "-m", "anchorvla.cli", "ctl", "--socket", str(d / "c.sock"), "--json"]
    try:
        wait_for_socket(d / "c.sock", timeout_s=60)
        started = subprocess.run([*ctl, "start"], env=env, capture_output=True, text=True, timeout=30)
        time.sleep(1.0)
        estop = subprocess.run([*ctl, "estop", "test"], env=env, capture_output=True, text=True, timeout=30)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_clean(proc, err)
    assert json.loads(started.stdout)["state"] == "running", started.stderr
    assert json.loads(estop.stdout)["state"] == "estopped", estop.stderr
    assert "estop: base_stop_move ok" in err
