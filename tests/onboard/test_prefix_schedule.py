"""Real-time chunking on the onboard side (issue 23): the schedule names the prefix of a chunk (the planned actions
that run until it takes over), serves a chunk conditioned on it from where the prefix ends without blending (late
when it arrives after that, on time when before), and the slow loop carries the prefix to a real ONNX engine whose
chunk then continues the plan at the tick it arrives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS
from onboard.config import Config
from onboard.devices import build_engine
from onboard.loops import build_loops
from onboard.schedule import ChunkSchedule
from onboard.standins import StandinArm
from policy_runtime.engines.onnx_engine import OnnxEngine
from policy_runtime.types import ActionChunk
from tests.bundle_helpers import tiny_bundle
from tests.policy_runtime.test_onnx_engine import _observation

DT = 100_000_000
H = 8


def chunk(t_obs: int, offset: float) -> ActionChunk:
    """Actions offset + k (one channel), so a served action names its chunk and index."""
    return ActionChunk(t_obs, DT, ("arm.x",), offset + np.arange(H, dtype=float).reshape(-1, 1))


def served(schedule: ChunkSchedule, ticks) -> list:
    return [None if (p := schedule.planned_at(k * DT, DT // 2)) is None else p.action[0] for k in ticks]


def test_the_prefix_is_what_the_plan_runs_until_the_chunk_takes_over_on_time():
    s = ChunkSchedule(execute_horizon=5, blending="linear", late="drop")
    assert s.prefix(H, 2 * DT, DT, 5 * DT, 3 * DT) is None  # nothing planned yet
    s.push(chunk(0, 0.0), 0)  # ticks 0..4 run actions 0..4
    # Observed at tick 2, arriving for tick 5: its actions 0..2 are for ticks 2..4, which the plan runs.
    np.testing.assert_array_equal(s.prefix(H, 2 * DT, DT, 5 * DT, 3 * DT)[:, 0], [2.0, 3.0, 4.0])
    s.push(chunk(2 * DT, 100.0), 5 * DT, 3 * DT, continue_at=3)
    # From index 3 on, unblended (linear blending would have mixed in the plan at the overlap).
    assert served(s, range(5, 11)) == [103.0, 104.0, 105.0, 106.0, 107.0, None]


def test_a_prefix_where_the_plan_ends_early_is_cut_and_the_chunk_continues_from_its_end_late():
    s = ChunkSchedule(execute_horizon=5, blending="none", late="drop")
    s.push(chunk(0, 0.0), 0)  # ticks 0..4
    # Observed at tick 3, arriving for tick 9: the plan has ticks 3 and 4 of the 6 before.
    prefix = s.prefix(H, 3 * DT, DT, 9 * DT, 6 * DT)
    np.testing.assert_array_equal(prefix[:, 0], [3.0, 4.0])
    s.push(chunk(3 * DT, 100.0), 9 * DT, 6 * DT, continue_at=len(prefix))
    # The arm held action 4 in between; the chunk goes on from its index 2, late, to its end.
    assert served(s, range(9, 16)) == [102.0, 103.0, 104.0, 105.0, 106.0, 107.0, None]
    assert s.late_shifted == 1


def test_a_conditioned_chunk_arriving_early_runs_its_prefix_on_time():
    s = ChunkSchedule(execute_horizon=5, blending="linear", late="drop")
    s.push(chunk(0, 0.0), 0)
    s.push(chunk(2 * DT, 100.0), 4 * DT, 2 * DT, continue_at=3)  # expected for tick 5, here for tick 4
    assert served(s, range(4, 10)) == [102.0, 103.0, 104.0, 105.0, 106.0, None]
    assert s.late_shifted == 0


def test_in_shift_mode_the_prefix_ends_where_the_late_chunk_will_run_from():
    s = ChunkSchedule(execute_horizon=5, blending="linear", late="shift")
    s.push(chunk(0, 0.0), 6 * DT, 6 * DT)  # 600 ms late: runs actions 1..7 at ticks 6..12
    assert served(s, range(6, 13)) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # Observed at tick 6, arriving for tick 12 with 2 fresh actions: 'shift' runs it from index 8 - 7 = 1, so its
    # prefix is the one action the plan runs at tick 11.
    prefix = s.prefix(H, 6 * DT, DT, 12 * DT, 6 * DT)
    np.testing.assert_array_equal(prefix[:, 0], [6.0])
    s.push(chunk(6 * DT, 100.0), 12 * DT, 6 * DT, continue_at=len(prefix))
    assert served(s, range(12, 20)) == [101.0, 102.0, 103.0, 104.0, 105.0, 106.0, 107.0, None]


def test_the_slow_loop_conditions_a_real_engine_and_its_chunk_continues_the_plan():
    _checkpoint, bundle = tiny_bundle()
    engine = OnnxEngine(bundle, precision="fp32", threads=1, seed=5)
    engine.condition_on_prefix(5.0)
    config = Config.model_validate({"policy": {"prefix_conditioning": True}, "control": {"rate_hz": 15}})
    loops = build_loops(config=config, arm=StandinArm(SO101_JOINTS), base=None, cameras=[], engine=engine)
    slow, schedule, period = loops.slow, loops.schedule, loops.fast.period_ns
    latency = 3 * period - 1_000_000  # 3 ticks

    obs0 = _observation()
    slow.fast.next_deadline_ns = obs0.t_ns + period
    first = engine.infer(slow.with_prefix(obs0, obs0.t_ns, obs0.t_ns))
    assert slow.deliver(
        obs0, first, latency, obs0.t_ns + period
    )  # nothing planned: no prefix, served as usual

    t1 = obs0.t_ns + 2 * period  # the next inference starts at tick 2, its chunk expected for tick 5
    obs1 = slow.with_prefix(dataclasses.replace(_observation(1), t_ns=t1), t1, t1)
    assert obs1.prefix is not None and len(obs1.prefix) == 3
    np.testing.assert_array_equal(
        obs1.prefix, first.actions[2:5]
    )  # the plan's ticks 2..4: chunk 0's actions 2..4
    second = engine.infer(obs1)
    np.testing.assert_allclose(second.actions[:3], obs1.prefix, atol=1e-5)
    arrival = t1 + 3 * period
    slow.fast.next_deadline_ns = arrival
    assert slow.deliver(obs1, second, latency, arrival)
    # The tick before ran chunk 0's action 4, the prefix's end; the new chunk goes on from its index 3.
    at = schedule.action_at(arrival, period // 2)
    assert at.chunk is second and at.j == 3
    np.testing.assert_array_equal(at.action, second.actions[3])  # not blended with the plan it replaced
    slow.close()


def test_prefix_conditioning_in_a_config_needs_a_policy_engine():
    with pytest.raises(UserError, match="needs a policy engine"):
        build_engine(Config.model_validate({"policy": {"prefix_conditioning": True}}))
