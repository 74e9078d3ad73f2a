"""The Go2 driver inside the controller: config driver 'emulated' end to end, a silent state topic
reaching the safety layer, and a missing robot at start-up (domains 66..69, loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from drivers.unitree import sport_api as api
from drivers.unitree.go2 import Go2Base
from onboard.config import Config
from onboard.devices import build_arm, build_base, build_engine
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinCamera
from tests.conftest import run_cli
from tests.go2_helpers import loopback_dds  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, base: dict) -> Path:
    path = tmp_path / "go2.yaml"
    path.write_text(yaml.safe_dump({"robot": {"base": base}, "policy": {"standin": {"compute_ms": 20}}}))
    return path


def test_run_with_the_emulated_go2_end_to_end(tmp_path):
    config = _config(tmp_path, {"driver": "emulated", "domain_id": 66})
    done = run_cli(
        *["run", "--config", str(config), "--duration", "2", "--summary", str(tmp_path / "s.json")]
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ticks"] >= 20 and summary["device_errors"] == 0 and summary["safety"]["faults"] == 0


def test_no_go2_on_the_network_is_one_line_and_exit_2(tmp_path):
    config = _config(tmp_path, {"driver": "go2", "interface": "lo", "domain_id": 67, "state_timeout_s": 0.3})
    done = run_cli("run", "--config", str(config), "--duration", "2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert lines[-1].startswith("anchorvla: error: no Go2 state on rt/sportmodestate within 0.3 s")
    assert "interface 'lo', DDS domain 67" in lines[-1]


def test_stopped_state_reaches_the_safety_layer_within_three_ticks():
    config = Config.model_validate({"robot": {"base": {"driver": "emulated", "domain_id": 68}}})
    base = build_base(config)
    cameras = [StandinCamera(c.name) for c in config.robot.cameras]
    runtime = Runtime(config, Devices(build_arm(config), base, cameras), build_engine(config))
    fault_tick: list[int] = []

    def stop_publishing_at_tick_15(tick_ns: int) -> None:
        if runtime.stats.ticks == 15:
            base.emulator.faults.no_state = True
            fault_tick.append(tick_ns)

    runtime.fast.tick_listeners.append(stop_publishing_at_tick_15)
    run_event_loop(runtime.run(2.0))
    faults = {f.name: f for f in runtime.safety.faults}
    assert "base_comms" in faults and "old" in faults["base_comms"].detail
    ticks_late = (faults["base_comms"].t_ns - fault_tick[0]) / runtime.fast.period_ns
    assert 1 <= round(ticks_late) <= 3
    assert base.emulator.mode() == api.MODE_BALANCE_STAND  # the safe stop's StopMove was answered


def test_emulate_command_serves_until_interrupted():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "anchorvla.cli", "emulate", "go2", "--domain-id", "69", "--mode", "locked"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "emulated Go2 on lo, DDS domain 69" in proc.stdout.readline()
        base = Go2Base("lo", 69)
        try:
            base.start()  # BalanceStand from the locked stand
            assert base.read_state().mode == api.MODE_BALANCE_STAND
        finally:
            base.stop()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "requests served" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
