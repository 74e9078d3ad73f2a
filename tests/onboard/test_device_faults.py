"""The runtime when a device goes away: the servo adapter unplugged mid-run (the real SO-101 driver on the pty
emulator, whose closing is the unplug), a camera unplugged mid-run, a camera that never delivers a frame."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from anchorvla.errors import DeviceError, LinkLost
from drivers.types import SO101_JOINTS
from onboard.config import Config
from onboard.devices import build_arm
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinArm, StandinBase, StandinCamera, StandinEngine

PERIOD_NS = round(1e9 / 15)


def engine() -> StandinEngine:
    return StandinEngine(SO101_JOINTS, PERIOD_NS, compute_ms=10, amplitude=0.3, period_s=2.0, base_speed=0.3)


def config(**safety) -> Config:
    return Config.model_validate({"robot": {"arm": {"driver": "emulated"}, "cameras": []}, "safety": safety})


class RecordingBase(StandinBase):
    """The stand-in base, with the time of every call."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, str, tuple]] = []

    def move(self, vx, vy, wz):
        self.calls.append((time.monotonic_ns(), "move", (vx, vy, wz)))
        super().move(vx, vy, wz)

    def stop_move(self):
        self.calls.append((time.monotonic_ns(), "stop_move", ()))
        super().stop_move()


def test_an_unplugged_servo_adapter_latches_arm_comms_stops_the_base_and_ends_the_run():
    """Unplugged at tick 15 and plugged back in at once: the next tick's read fails (termios/EIO on the old
    port), arm_comms latches, the base gets Move 0 and StopMove, the run ends with that reason, and nothing
    reaches the replugged bus: the driver does not reopen it and the fault stays latched."""
    cfg = config()
    arm, base = build_arm(cfg), RecordingBase()
    runtime = Runtime(cfg, Devices(arm, base, []), engine())
    marks: dict = {"n": 0}

    def on_tick(_deadline_ns: int) -> None:
        marks["n"] += 1
        if marks["n"] == 15:
            arm.emulator.close()  # unplugged ...
            marks["unplugged_ns"] = time.monotonic_ns()
            arm.emulator.start()  # ... and back: a new pty, the servos as they were
            marks["packets"] = arm.emulator.packets
            marks["goal"] = [s.value("Goal_Position") for s in arm.emulator.servos]

    runtime.fast.tick_listeners.append(on_tick)
    result = run_event_loop(runtime.run(5.0))

    assert result["exit_reason"] == "fault:arm_comms"
    assert any(f.startswith("arm_comms: arm link lost: serial link") for f in result["faults"])
    fault = next(f for f in runtime.safety.faults if f.name == "arm_comms")
    assert fault.t_ns - marks["unplugged_ns"] <= 2 * PERIOD_NS
    assert runtime.stats.ticks <= 17  # ended at the tick that saw it
    after = [(name, args) for t, name, args in base.calls if t >= marks["unplugged_ns"]]
    assert ("move", (0.0, 0.0, 0.0)) in after and ("stop_move", ()) in after
    assert all(args == (0.0, 0.0, 0.0) for name, args in after if name == "move")
    assert runtime.safety.faulted  # no reset happens by itself
    assert arm.emulator._thread is None  # the runtime closed the arm (and its emulator)
    assert arm.emulator.packets == marks["packets"]
    assert [s.value("Goal_Position") for s in arm.emulator.servos] == marks["goal"]
    with pytest.raises(LinkLost):
        arm.write_goal(np.zeros(6))


class Audited:
    """Arm goals with their times, around the stand-in arm."""

    def __init__(self):
        self.inner = StandinArm(SO101_JOINTS)
        self.joint_names = SO101_JOINTS
        self.goals: list[tuple[int, np.ndarray]] = []

    def start(self):
        self.inner.start()

    def read_state(self):
        return self.inner.read_state()

    def write_goal(self, positions):
        self.goals.append((time.monotonic_ns(), np.array(positions)))
        self.inner.write_goal(positions)

    def stop(self):
        self.inner.stop()


@pytest.mark.parametrize("how", ["raises", "returns None"])
def test_a_camera_unplugged_mid_run_holds_until_it_is_back(caplog, how):
    """latest() raising (a driver whose device went away) or giving no frame: the arm holds, the base gets Move 0
    each tick, a hold (not a latched fault) with one clear log line; motion resumes when the camera is back."""
    cfg = Config.model_validate({"robot": {"cameras": [{"name": "wrist"}]}})
    arm, base, camera = Audited(), RecordingBase(), StandinCamera("wrist")
    runtime = Runtime(cfg, Devices(arm, base, [camera]), engine())
    marks: dict = {"n": 0}

    def on_tick(_deadline_ns: int) -> None:
        marks["n"] += 1
        if marks["n"] == 20:
            marks["gone"] = time.monotonic_ns()
            camera.unplugged, camera.blank = how == "raises", how == "returns None"
        elif marks["n"] == 35:
            marks["back"] = time.monotonic_ns()
            camera.unplugged = camera.blank = False
        elif marks["n"] == 55:
            runtime.stop("test over")

    runtime.fast.tick_listeners.append(on_tick)
    with caplog.at_level(logging.INFO, logger="anchorvla"):
        result = run_event_loop(runtime.run(10.0))

    assert result["exit_reason"] == "test over" and not result["faults"]
    assert result["safety"]["holds"] == 1
    # from the tick after the camera went until it came back: every Move is 0 and the arm goal settles
    held = [args for t, name, args in base.calls if marks["gone"] + PERIOD_NS < t < marks["back"]]
    assert len(held) >= 10 and all(args == (0.0, 0.0, 0.0) for args in held)
    goals = [g for t, g in arm.goals if marks["gone"] + 3 * PERIOD_NS < t < marks["back"]]
    assert all(np.array_equal(g, goals[0]) for g in goals)
    resumed = [args for t, name, args in base.calls if t > marks["back"] + 10 * PERIOD_NS and name == "move"]
    assert any(args[0] > 0 for args in resumed)
    lines = [r.getMessage() for r in caplog.records if "wrist" in r.getMessage()]
    assert any("safety hold camera_stale: camera wrist: no frame" in line for line in lines), lines


def test_a_camera_that_never_delivers_ends_start_up_with_one_line():
    cfg = Config.model_validate(
        {"robot": {"cameras": [{"name": "wrist"}]}, "safety": {"staleness": {"first_frame_s": 0.5}}}
    )
    camera = StandinCamera("wrist")
    camera.blank = True
    base = RecordingBase()
    runtime = Runtime(cfg, Devices(StandinArm(SO101_JOINTS), base, [camera]), engine())
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as info:
        run_event_loop(runtime.run(10.0))
    assert time.monotonic() - t0 < 5.0  # bounded: the 0.5 s wait, not the run's 10 s
    message = str(info.value)
    assert "\n" not in message and "camera 'wrist' delivered no frame within 0.5 s" in message
    assert runtime.stats.ticks == 0
    assert all(args == (0.0, 0.0, 0.0) for _, name, args in base.calls if name == "move")


def test_a_camera_whose_driver_raises_at_start_up_is_named_with_its_error():
    cfg = Config.model_validate(
        {"robot": {"cameras": [{"name": "wrist"}]}, "safety": {"staleness": {"first_frame_s": 0.2}}}
    )
    camera = StandinCamera("wrist")
    camera.unplugged = True
    runtime = Runtime(cfg, Devices(StandinArm(SO101_JOINTS), None, [camera]), engine())
    with pytest.raises(
        DeviceError, match=r"camera 'wrist' delivered no frame .*DeviceError: stand-in camera wrist"
    ):
        run_event_loop(runtime.run(10.0))


def test_a_realsense_stream_that_stops_mid_run_holds_the_arm_and_stops_the_base(tmp_path, caplog):
    """A played-back RealSense whose recording ends (its frames stop, as when the camera is pulled out; latest()
    keeps the last frame): a camera_stale hold with one log line, base Move 0 every tick, no latched fault."""
    pytest.importorskip("pyrealsense2", reason="needs pyrealsense2 and libusb-1.0")
    from drivers.realsense import RealSenseCamera
    from tests.realsense_helpers import numbered_images, record_together

    path = tmp_path / "wrist.db3"
    record_together({path: dict(images=numbered_images(15), fps=30)})  # 0.5 s of frames
    cfg = Config.model_validate({"robot": {"cameras": [{"name": "wrist"}]}})
    base, camera = RecordingBase(), RealSenseCamera("wrist", path=path, fps=30)
    runtime = Runtime(cfg, Devices(StandinArm(SO101_JOINTS), base, [camera]), engine())
    with caplog.at_level(logging.WARNING, logger="anchorvla"):
        result = run_event_loop(runtime.run(2.0))
    assert result["exit_reason"] == "duration" and not result["faults"]
    assert result["safety"]["holds"] >= 1
    stale_from = camera.latest().t_ns + int(cfg.safety.staleness.frame_s * 1e9) + 2 * PERIOD_NS
    after = [args for t, name, args in base.calls if name == "move" and t > stale_from]
    assert len(after) >= 5 and all(args == (0.0, 0.0, 0.0) for args in after)
    assert any(
        "safety hold camera_stale: camera wrist: newest frame is" in r.getMessage() for r in caplog.records
    )


def test_anchorvla_run_exits_1_with_the_reason_and_no_traceback_when_the_adapter_is_pulled(tmp_path):
    """Two processes, as on the robot: `anchorvla emulate servos` behind a stable name (the udev rule's /dev/so101)
    and `anchorvla run` on it with the feetech driver. Ending the emulator takes the pty away mid-run."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from drivers.feetech.calibration import default_calibration, save_calibration
    from tests.conftest import REPO

    cal, link, summary = tmp_path / "so101.json", tmp_path / "so101", tmp_path / "summary.json"
    save_calibration(cal, default_calibration())
    (tmp_path / "robot.yaml").write_text(
        f"robot:\n  arm: {{driver: feetech, port: {link}, calibration: {cal}}}\n"
        "policy:\n  standin: {compute_ms: 10}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "anchorvla.cli"]
    bus = subprocess.Popen(
        [*cli, "emulate", "servos", "--link", str(link), "--calibration", str(cal)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    controller = None
    try:
        deadline = time.monotonic() + 30
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        controller = subprocess.Popen(
            [*cli, "run", "--config", str(tmp_path / "robot.yaml"), "--summary", str(summary)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4.0)  # started and running
        assert controller.poll() is None
        bus.send_signal(signal.SIGTERM)  # the adapter is pulled out
        out, err = controller.communicate(timeout=30)
    finally:
        for proc in (controller, bus):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert controller.returncode == 1, err
    assert "Traceback" not in err and "arm link lost, ending the run" in err
    data = json.loads(summary.read_text())
    assert data["exit_reason"] == "fault:arm_comms" and data["ticks"] > 10
    assert any(f.startswith("arm_comms: arm link lost") for f in data["faults"])
    assert "fault:arm_comms" in out
