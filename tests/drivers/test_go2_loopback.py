"""The Go2 client against the emulated Go2 over DDS on loopback (domains 60..65)."""

from __future__ import annotations

import threading
import time

import pytest
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from anchorvla.errors import DeviceError
from drivers.emulated.go2 import Go2Emulator
from drivers.emulated.go2_process import Go2EmulatorProcess
from drivers.emulated.world import World
from drivers.unitree import sport_api as api
from drivers.unitree.dds_config import Participant, queue_qos
from drivers.unitree.go2 import Go2Base
from drivers.unitree.idl import Response_
from tests.go2_helpers import loopback_dds  # noqa: F401  (autouse fixture)
from tools import go2_scenarios as sc


def test_drives_a_separate_emulator_process_through_the_whole_sequence():
    """Stand up -> balance stand -> Move at 15 Hz for 10 s -> StopMove -> stand down; pose within 2%."""
    with Go2EmulatorProcess(domain_id=61, limits={"transition_s": 0.3}) as emu:
        result = sc.drive_sequence(emu, 61, seconds=10.0, rate_hz=15.0, twist=(0.4, 0.1, 0.2))
    assert result["modes"] == [
        api.MODE_LIE_DOWN,
        api.MODE_JOINT_LOCK,
        api.MODE_BALANCE_STAND,
        api.MODE_LOCOMOTION,
        api.MODE_BALANCE_STAND,
        api.MODE_LIE_DOWN,
    ]
    assert result["moves_accepted"] == result["moves_sent"] == 150
    assert result["position_error_fraction"] <= 0.02
    assert result["yaw_error_fraction"] <= 0.02


@pytest.fixture
def locked_go2():
    """An in-process emulated Go2 standing with its joints locked, on domain 62, writing into a World."""
    world = World()
    with Go2Emulator("lo", 62, rate_hz=100.0, initial_mode=api.MODE_JOINT_LOCK, world=world) as emu:
        yield emu, world


def test_start_up_balance_stands_a_locked_robot_and_moves_it(locked_go2):
    emu, world = locked_go2
    base = Go2Base("lo", 62)
    try:
        base.start()
        assert emu.mode() == api.MODE_BALANCE_STAND
        for _ in range(10):
            base.move(0.5, 0.0, 0.0)
            time.sleep(1 / 15)
        state = base.read_state()
    finally:
        base.stop()
    accepted = [r for r in emu.received if r.api_id == api.MOVE and r.code == api.OK]
    assert len(accepted) == 10 and state.mode == api.MODE_LOCOMOTION and state.velocity[0] > 0.1
    assert state.position[0] > 0.05 and world.base_pose[0] == pytest.approx(emu.pose()[0], abs=0.05)


def test_replies_match_by_request_id_and_noreply_calls_get_no_answer(locked_go2):
    emu, _ = locked_go2
    listener_dp = Participant("lo", 62)
    responses = DataReader(
        listener_dp.dp, Topic(listener_dp.dp, api.TOPIC_RESPONSE, Response_), qos=queue_qos()
    )
    a, b = Go2Base("lo", 62), Go2Base("lo", 62)
    try:
        a.connect()
        b.connect()
        time.sleep(0.05)
        responses.take(64)  # the connect round trips
        emu.faults.reply_delay_s = 0.1  # both calls are in flight together
        results = {}
        calls = [("euler", a, api.EULER), ("stop", b, api.STOP_MOVE)]
        threads = [
            threading.Thread(target=lambda n=n, c=c, i=i: results.__setitem__(n, c.client.call(i, "{}", 2.0)))
            for n, c, i in calls
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results["euler"][0] == api.ERR_API_NOT_IMPLEMENTED and results["stop"][0] == api.OK
        assert len(responses.take(16)) == 2
        for _ in range(5):
            a.client.move(0.0, 0.0, 0.0)
        time.sleep(0.3)
        assert sum(r.api_id == api.MOVE for r in emu.received) == 5
        assert responses.take(16) == []  # Move is noreply: no answer
    finally:
        a.stop()
        b.stop()
        listener_dp.close()


def test_silent_robot_stop_move_fails_within_its_timeout(locked_go2):
    emu, _ = locked_go2
    base = Go2Base("lo", 62, rpc_timeout_s=0.2)
    try:
        base.start()
        emu.faults.silent = True
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="StopMove failed.*3104"):
            base.stop_move()
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(DeviceError, match="BalanceStand failed"):
            base.balance_stand()
    finally:
        base.stop()


def test_dropped_messages_time_out_instead_of_hanging(locked_go2):
    emu, _ = locked_go2
    base = Go2Base("lo", 62, rpc_timeout_s=0.2)
    try:
        base.start()
        emu.faults.drop_fraction = 1.0
        code, _ = base.client.call(api.STOP_MOVE, "{}", 0.2)
        assert code == api.ERR_TIMEOUT
    finally:
        base.stop()


def test_stopped_state_is_an_error_within_three_ticks():
    with Go2Emulator("lo", 63, rate_hz=100.0, initial_mode=api.MODE_BALANCE_STAND) as emu:
        result = sc.fault_no_state(_ProcessLike(emu), 63, rate_hz=15.0, max_state_age_s=0.1)
    assert result["ticks_to_detect"] is not None and 1 <= result["ticks_to_detect"] <= 3
    assert result["state_age_at_end_s"] > 0.5


def test_no_robot_is_one_line_naming_interface_and_domain():
    result = sc.no_robot(64, state_timeout_s=0.3)
    assert (
        "no Go2 state on rt/sportmodestate within 0.3 s on interface 'lo', DDS domain 64" in result["message"]
    )
    assert "\n" not in result["message"]


def test_lying_robot_is_not_stood_up_unless_configured():
    with Go2Emulator("lo", 65, rate_hz=100.0) as emu:
        base = Go2Base("lo", 65)
        with pytest.raises(DeviceError, match="lie down.*stand_up_on_start"):
            base.start()
        base.stop()
        emu.body.limits.transition_s = 0.2
        base = Go2Base("lo", 65, stand_up_on_start=True)
        try:
            base.start()
        finally:
            base.stop()
        assert emu.mode() == api.MODE_BALANCE_STAND


class _ProcessLike:
    """The scenario helpers' view of an emulator (set_faults), for an in-process one."""

    def __init__(self, emu: Go2Emulator):
        self.emu = emu

    def set_faults(self, **faults) -> None:
        for key, value in faults.items():
            setattr(self.emu.faults, key, value)


def test_a_client_with_the_vendors_dotted_type_names_talks_to_the_emulator():
    import multiprocessing as mp

    from tests.go2_vendor_style import call_stand_up

    with Go2Emulator("lo", 60, rate_hz=50.0) as emu:
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        child = ctx.Process(target=call_stand_up, args=(60, results))
        child.start()
        try:
            code = results.get(timeout=30)
        finally:
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join()
        assert code == api.OK
        assert any(r.api_id == api.STAND_UP for r in emu.received)
