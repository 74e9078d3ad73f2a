"""The STS3215 bus emulator, driven by the vendor SDK (scservo_sdk) itself over the pty."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scservo_sdk as scs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.emulated.sts_servo import EmulatedServo
from drivers.emulated.world import World
from drivers.feetech.calibration import default_calibration
from drivers.feetech.table import REGISTERS, decode, encode, from_bytes, reg

IDS = (1, 2, 3, 4, 5, 6)


@pytest.fixture
def emulator():
    with ServoBusEmulator(ids=IDS) as emu:
        yield emu


@pytest.fixture
def sdk(emulator):
    """The vendor SDK as users run it: PortHandler + PacketHandler(0) on the pty."""
    port = scs.PortHandler(emulator.port)
    assert port.openPort()
    yield port, scs.PacketHandler(0)
    port.closePort()


def patient(call, *args):
    """An SDK call, tried again if the answer timed out: these tests check encodings, not timing, and a
    loaded 2-core test machine can starve the emulator thread past the SDK's 34 ms timeout. `args[0]` is
    the PortHandler."""
    port = args[0]
    for _ in range(3):
        out = call(*args)
        result = out if isinstance(out, int) else out[1] if len(out) == 3 else out[0]
        if result != scs.COMM_RX_TIMEOUT:
            break
        time.sleep(0.05)  # the late answer arrives; drop it (the SDK itself would take it for the next one)
        port.ser.reset_input_buffer()
    return out


def sdk_write(ph, port, servo_id, register, value):
    raw = encode(value, register)
    write = ph.write1ByteTxRx if register.size == 1 else ph.write2ByteTxRx
    return patient(write, port, servo_id, register.address, raw)


def sdk_read(ph, port, servo_id, register):
    read = ph.read1ByteTxRx if register.size == 1 else ph.read2ByteTxRx
    raw, result, error = patient(read, port, servo_id, register.address)
    assert result == scs.COMM_SUCCESS, ph.getTxRxResult(result)
    return decode(raw, register)


def test_sdk_pings_six_sts3215_and_not_a_seventh(sdk):
    port, ph = sdk
    for i in IDS:
        model, result, error = patient(ph.ping, port, i)
        assert (model, result, error) == (777, scs.COMM_SUCCESS, 0)
    assert ph.ping(port, 7)[1] == scs.COMM_RX_TIMEOUT


# Values that exercise each register's sign encoding (negative where signed) within its range.
def _probe_value(register):
    if register.sign_bit is not None:
        return -((1 << min(register.sign_bit, 11)) // 3)
    return min(200, (1 << (8 * register.size)) - 2) if register.name != "Torque_Enable" else 0


WRITABLE = [r for r in REGISTERS.values() if r.writable and r.name not in ("ID", "Baud_Rate", "Lock")]


def test_sdk_writes_and_reads_every_writable_register_with_sign_encoding(sdk):
    port, ph = sdk
    for i in IDS:
        assert sdk_write(ph, port, i, reg("Lock"), 0) == (scs.COMM_SUCCESS, 0)
        for register in WRITABLE:
            value = _probe_value(register) + i
            if register.name in ("Goal_Position", "Min_Position_Limit", "Max_Position_Limit"):
                continue  # checked below: the limits clamp the goal
            assert sdk_write(ph, port, i, register, value)[0] == scs.COMM_SUCCESS, register.name
            assert sdk_read(ph, port, i, register) == value, register.name


def test_goal_position_is_signed_and_clamped_by_the_limits(sdk):
    port, ph = sdk
    sdk_write(ph, port, 1, reg("Lock"), 0)
    sdk_write(ph, port, 1, reg("Min_Position_Limit"), 0)
    sdk_write(ph, port, 1, reg("Max_Position_Limit"), 0)  # both 0: no limit (multi-turn style)
    sdk_write(ph, port, 1, reg("Goal_Position"), -300)
    assert sdk_read(ph, port, 1, reg("Goal_Position")) == -300
    sdk_write(ph, port, 1, reg("Min_Position_Limit"), 1000)
    sdk_write(ph, port, 1, reg("Max_Position_Limit"), 3000)
    sdk_write(ph, port, 1, reg("Goal_Position"), 3500)
    assert sdk_read(ph, port, 1, reg("Goal_Position")) == 3000


def test_read_only_registers_and_the_eeprom_lock(sdk, emulator):
    port, ph = sdk
    assert sdk_read(ph, port, 2, reg("Model_Number")) == 777
    ph.write2ByteTxRx(port, 2, reg("Model_Number").address, 123)
    assert sdk_read(ph, port, 2, reg("Model_Number")) == 777
    ph.write2ByteTxRx(port, 2, reg("Present_Position").address, 5)
    assert sdk_read(ph, port, 2, reg("Present_Position")) == 2048
    # Lock is set at power-up: EEPROM writes are ignored until it is cleared.
    sdk_write(ph, port, 2, reg("P_Coefficient"), 7)
    assert sdk_read(ph, port, 2, reg("P_Coefficient")) == 32
    sdk_write(ph, port, 2, reg("Lock"), 0)
    sdk_write(ph, port, 2, reg("P_Coefficient"), 7)
    assert sdk_read(ph, port, 2, reg("P_Coefficient")) == 7


def test_homing_offset_shifts_present_position(sdk, emulator):
    port, ph = sdk
    sdk_write(ph, port, 3, reg("Lock"), 0)
    sdk_write(ph, port, 3, reg("Homing_Offset"), -500)  # sign bit 11
    assert patient(ph.read2ByteTxRx, port, 3, reg("Homing_Offset").address)[0] == 500 | (1 << 11)
    assert sdk_read(ph, port, 3, reg("Present_Position")) == 2548  # Present = Actual - Homing_Offset


def test_sync_write_and_sync_read_of_all_six(sdk, emulator):
    port, ph = sdk
    goal = reg("Goal_Position")
    writer = scs.GroupSyncWrite(port, ph, goal.address, goal.size)
    for i in IDS:
        assert writer.addParam(i, [scs.SCS_LOBYTE(1000 + i), scs.SCS_HIBYTE(1000 + i)])
    assert writer.txPacket() == scs.COMM_SUCCESS
    reader = scs.GroupSyncRead(port, ph, goal.address, 2)
    for i in IDS:
        reader.addParam(i)
    assert reader.txRxPacket() == scs.COMM_SUCCESS
    assert [reader.getData(i, goal.address, 2) for i in IDS] == [1000 + i for i in IDS]


def test_reg_write_waits_for_action_and_broadcast_gets_no_answer(sdk, emulator):
    port, ph = sdk
    acc = reg("Acceleration")
    assert patient(ph.regWriteTxRx, port, 4, acc.address, 1, [77])[0] == scs.COMM_SUCCESS
    assert sdk_read(ph, port, 4, acc) == 0
    assert ph.action(port, scs.BROADCAST_ID) == scs.COMM_SUCCESS
    assert sdk_read(ph, port, 4, acc) == 77
    ph.write1ByteTxRx(port, scs.BROADCAST_ID, acc.address, 9)  # broadcast: every servo, no status packet
    time.sleep(0.01)
    assert port.ser.in_waiting == 0
    assert [sdk_read(ph, port, i, acc) for i in IDS] == [9] * 6


def test_status_error_bits_and_corrupted_checksum(sdk, emulator):
    port, ph = sdk
    emulator.servo(5).faults.error_bits = 32
    _, result, error = ph.read1ByteTxRx(port, 5, reg("Present_Temperature").address)
    assert (result, error) == (scs.COMM_SUCCESS, 32)
    assert "Overload" in ph.getRxPacketError(error)
    emulator.servo(5).faults.corrupt_checksum = 1.0
    assert ph.read1ByteTxRx(port, 5, reg("Present_Temperature").address)[1] == scs.COMM_RX_CORRUPT
    emulator.servo(5).faults.silent = True
    assert ph.ping(port, 5)[1] == scs.COMM_RX_TIMEOUT


def test_byte_timing_follows_the_baud_rate(emulator):
    """A sync read of six positions cannot finish before its bytes could cross the wire."""
    port = scs.PortHandler(emulator.port)
    port.openPort()
    try:
        ph = scs.PacketHandler(0)
        for i in IDS:
            ph.write1ByteTxRx(port, i, reg("Lock").address, 0)
            ph.write1ByteTxRx(port, i, reg("Return_Delay").address, 0)
        reader = scs.GroupSyncRead(port, ph, 56, 2)
        for i in IDS:
            reader.addParam(i)
        wire_s = (8 + 6 + 6 * 8) * 10 / 1_000_000
        times = []
        for _ in range(20):
            t = time.perf_counter()
            assert reader.txRxPacket() == scs.COMM_SUCCESS
            times.append(time.perf_counter() - t)
        assert min(times) >= wire_s * 0.95
    finally:
        port.closePort()


def test_slow_baud_rate_is_slower():
    with ServoBusEmulator(ids=(1,), baudrate=38_400) as emu:
        port = scs.PortHandler(emu.port)
        port.setBaudRate(38_400)
        try:
            ph = scs.PacketHandler(0)
            ph.write1ByteTxRx(port, 1, reg("Lock").address, 0)
            ph.write1ByteTxRx(port, 1, reg("Return_Delay").address, 0)
            t = time.perf_counter()
            data, result, _ = ph.readTxRx(port, 1, 0, 40)  # 8 + 46 bytes at 38400 baud: 14 ms
            assert result == scs.COMM_SUCCESS and len(data) == 40
            assert time.perf_counter() - t >= 54 * 10 / 38_400 * 0.95
        finally:
            port.closePort()


def test_duplicate_ids_collide_on_the_line(emulator):
    with ServoBusEmulator(servos=[EmulatedServo(1), EmulatedServo(1, actual_ticks=1000)]) as emu:
        port = scs.PortHandler(emu.port)
        port.openPort()
        try:
            assert scs.PacketHandler(0).ping(port, 1)[1] == scs.COMM_RX_CORRUPT
        finally:
            port.closePort()


# -- physics (advanced with explicit times: no sleeping) ------------------------------------------------
def _servo_on(goal: int, **regs) -> EmulatedServo:
    s = EmulatedServo(1)
    s.advance(0.0)
    for name, value in regs.items():
        s.set_value(name, value)
    s.set_value("Goal_Position", goal)
    s.set_value("Torque_Enable", 1)
    return s


def test_position_follows_goal_within_speed_and_acceleration_limits():
    s = _servo_on(3048, Goal_Velocity=20, Acceleration=10)  # 1000 ticks/s, 1000 ticks/s^2
    s.advance(0.5)  # accelerating: at most a*t^2/2 = 125 ticks
    assert 2048 < s.value("Present_Position") <= 2048 + 126
    s.advance(1.0)  # 0.5 s more, capped at 1000 ticks/s
    assert s.value("Present_Velocity") == 20 and s.value("Moving") == 1
    s.advance(5.0)
    assert s.value("Present_Position") == 3048 and s.value("Moving") == 0
    down = _servo_on(1048)
    down.advance(0.05)
    assert down.value("Present_Velocity") < 0  # sign bit 15 on the wire


def test_stall_raises_load_then_heat_then_overload_bit():
    s = _servo_on(2548)
    s.faults.stalled = True
    s.advance(0.1)
    assert s.value("Present_Load") > 200 and s.value("Present_Current") > 0
    s.advance(1.0)
    assert not s.error_bits()
    s.advance(3.2)  # Overload_Torque exceeded for longer than Protection_Time (200 x 10 ms)
    assert s.error_bits() & 32 and s.value("Present_Load") == 0  # tripped: torque released
    s2 = _servo_on(1548, Protection_Time=250, Overload_Torque=100)
    s2.faults.stalled = True
    t0 = s2.value("Present_Temperature")
    s2.advance(0.1)
    assert s2.value("Present_Load") < 0  # sign bit 10 on the wire
    s2.advance(30.0)  # full load, never over Overload_Torque: it heats until the overheat trip
    assert s2.error_bits() & 4
    assert s2.value("Present_Temperature") > t0 + 20


def test_voltage_sag_sets_the_voltage_bit():
    s = EmulatedServo(1)
    s.faults.voltage_v = 3.5
    s.advance(0.0)
    assert s.value("Present_Voltage") == 35 and s.value("Status") & 1


def test_world_sees_the_joints_through_the_calibration():
    cal = default_calibration()
    world = World()
    with ServoBusEmulator(calibration=cal, world=world) as emu:
        emu.servo(2).move_by_hand(2048 + 512)  # +45 deg from mid-range
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and abs(world.snapshot()[0][1] - np.pi / 4) > 1e-6:
            time.sleep(0.02)
        joints = world.snapshot()[0]
    assert joints[1] == pytest.approx(np.pi / 4)
    assert joints[0] == pytest.approx(0.0)


def test_link_symlink_is_made_and_removed(tmp_path):
    link = tmp_path / "so101"
    with ServoBusEmulator(ids=(1,), link=link) as emu:
        assert link.is_symlink() and emu.path == str(link)
        port = scs.PortHandler(str(link))
        port.openPort()
        assert patient(scs.PacketHandler(0).ping, port, 1)[0] == 777
        port.closePort()
    assert not link.exists()


def test_raw_read_past_the_table_is_zero_padded():
    s = EmulatedServo(9)
    assert s.read(84, 4)[2:] == b"\x00\x00"
    assert from_bytes(s.read(3, 2), 2) == 777


def test_signed_present_registers_on_the_wire(sdk, emulator):
    """Present_Velocity (bit 15) and Present_Load (bit 10) read through the SDK while moving down / pushing."""
    port, ph = sdk
    s = emulator.servo(1)
    sdk_write(ph, port, 1, reg("Goal_Velocity"), 10)  # 500 ticks/s: still moving after the next read
    sdk_write(ph, port, 1, reg("Goal_Position"), 1048)
    sdk_write(ph, port, 1, reg("Torque_Enable"), 1)
    time.sleep(0.1)
    raw_speed = patient(ph.read2ByteTxRx, port, 1, reg("Present_Velocity").address)[0]
    assert raw_speed & (1 << 15) and decode(raw_speed, reg("Present_Velocity")) == -10
    with emulator.lock:
        s.faults.stalled = True
    raw_load = patient(ph.read2ByteTxRx, port, 1, reg("Present_Load").address)[0]
    assert raw_load & (1 << 10) and decode(raw_load, reg("Present_Load")) < 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=64))
def test_line_noise_never_stops_the_bus(emulator, garbage):
    """Arbitrary bytes (noise, truncated or malformed packets) are ignored; the next ping is answered."""
    port = scs.PortHandler(emulator.port)
    port.openPort()
    try:
        port.ser.write(b"\xff\xff" + garbage)
        time.sleep(0.003)  # longer than the servos' idle reset: a half packet is dropped
        assert patient(scs.PacketHandler(0).ping, port, 2)[:2] == (777, scs.COMM_SUCCESS)
    finally:
        port.closePort()
