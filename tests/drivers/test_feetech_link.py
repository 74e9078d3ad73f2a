"""The SO-101 driver when the adapter goes away (the pty emulator closed mid-session: the kernel then answers
the client's flush, read and write with EIO, as for a USB adapter pulled out) and the retries bounded by the
control period."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from anchorvla.errors import DeviceError, LinkLost
from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.feetech.bus import FeetechBus
from drivers.feetech.calibration import default_calibration
from drivers.feetech.so101 import SO101Arm

CAL = default_calibration()


@pytest.fixture
def linked(tmp_path):
    """An emulated bus behind a stable name, as the udev rule's /dev/so101."""
    emu = ServoBusEmulator(calibration=CAL, link=tmp_path / "so101")
    emu.start()
    yield emu
    emu.close()


def test_an_unplugged_adapter_is_a_lost_link_and_a_replug_is_not_reopened(linked):
    arm = SO101Arm(linked.path, CAL)
    arm.start()
    pose = arm.read_state().positions
    goal_before = linked.servo(1).value("Goal_Position")
    pts = linked.port
    linked.close()  # unplugged
    assert not os.path.exists(pts)
    with pytest.raises(LinkLost, match="adapter unplugged") as info:
        arm.read_state()
    assert "\n" not in str(info.value) and "restart the controller" in str(info.value)
    assert isinstance(info.value, DeviceError)
    linked.start()  # plugged back in: a new pty behind the same name, the servos as they were
    packets = linked.packets
    for _ in range(3):
        with pytest.raises(LinkLost):
            arm.write_goal(pose + 0.2)
        with pytest.raises(LinkLost):
            arm.read_state()
    assert linked.packets == packets  # nothing reached the replugged bus
    assert linked.servo(1).value("Goal_Position") == goal_before
    assert arm.comm_failures == 7
    arm.stop()


def test_a_device_node_that_vanished_is_a_lost_link(linked):
    bus = FeetechBus(linked.path, retries=0)
    bus.open()
    try:
        assert bus.read(1, "ID") == 1
        linked.link.unlink()  # the node goes (the pty behind it still works, so only a failure notices)
        assert bus.read(1, "ID") == 1
        linked.servo(1).faults.silent = True
        with pytest.raises(LinkLost, match="is gone"):
            bus.read(1, "ID")
    finally:
        bus.close()


def _tries(exc: BaseException) -> int:
    return int(str(exc).rsplit("after ", 1)[1].split()[0])


def test_retries_stop_where_a_silent_bus_would_overrun_the_time_limit(linked):
    """Ten retries on a silent bus take about 120 ms of timeouts; with a 33 ms limit (half a 15 Hz tick) no
    retry starts that could end past it. Counted in tries, which a slow host can only lower."""
    answer = 6 * (6 + 8)
    unbounded = FeetechBus(linked.path, retries=10, budget_s=0.0)
    bounded = FeetechBus(linked.path, retries=10, budget_s=0.0, time_limit_s=1 / 30)
    fit = max(r for r in range(11) if bounded.silent_bus_s(r, answer) <= 1 / 30)
    assert bounded.silent_bus_s(10, answer) > 0.1 and fit == 3
    for s in linked.servos:
        s.faults.silent = True
    tries = {}
    for name, bus in (("unbounded", unbounded), ("bounded", bounded)):
        bus.open()
        bus.set_return_delay_s(0.0)
        try:
            with pytest.raises(DeviceError) as info:
                bus.sync_read(56, 8, (1, 2, 3, 4, 5, 6))
            tries[name] = _tries(info.value)
        finally:
            bus.close()
    assert tries["unbounded"] == 11
    assert 1 <= tries["bounded"] <= fit + 1


@pytest.mark.parametrize(("rate_hz", "retries", "kept"), [(15, 3, 3), (15, 10, 3), (50, 3, 1), (1000, 2, 0)])
def test_the_arm_lowers_retries_that_cannot_fit_the_control_period_with_one_line(
    caplog, rate_hz, retries, kept
):
    with caplog.at_level(logging.WARNING, logger="drivers.feetech.so101"):
        arm = SO101Arm("/dev/null", CAL, retries=retries, period_s=1 / rate_hz)
    assert arm.bus.retries == kept
    assert arm.bus.time_limit_s == pytest.approx(0.5 / rate_hz)
    lines = [r.getMessage() for r in caplog.records]
    if kept < retries:
        assert len(lines) == 1 and f"robot.arm.retries {retries} cannot fit" in lines[0]
        assert f"using {kept} retries" in lines[0]
    else:
        assert not lines


def test_the_runtime_gives_the_arm_its_control_period():
    from onboard.config import Config
    from onboard.devices import build_arm

    config = Config.model_validate(
        {"robot": {"arm": {"driver": "emulated", "retries": 10}}, "control": {"rate_hz": 30}}
    )
    arm = build_arm(config)
    assert arm.bus.time_limit_s == pytest.approx(1 / 60) and arm.bus.retries == 1
    arm.start()
    try:
        assert (
            arm.bus.time_limit_s == pytest.approx(1 / 60) and arm.bus.retries == 1
        )  # the emulator's pty too
        assert np.all(np.isfinite(arm.read_state().positions))
    finally:
        arm.stop()
