import numpy as np
import pytest

from onboard.schedule import ChunkSchedule, blend_weight
from policy_runtime.types import ActionChunk

DT = 66_666_667


def chunk(t_obs: int, values, n: int = 10) -> ActionChunk:
    actions = (
        np.asarray(values, dtype=float).reshape(-1, 1) if np.ndim(values) else np.full((n, 1), float(values))
    )
    return ActionChunk(t_obs, DT, ("arm.x",), actions)


def test_past_actions_dropped_and_horizon_served():
    s = ChunkSchedule(execute_horizon=3, blending="none")
    c = chunk(0, np.arange(10))
    dropped = s.push(c, next_tick_ns=2 * DT)  # actions 0 and 1 are in the past
    assert dropped == 2 and s.stale_dropped == 2
    served = [s.action_at(k * DT, DT // 2) for k in range(2, 7)]
    assert [p.action[0] if p else None for p in served] == [2, 3, 4, None, None]
    assert [p.j for p in served[:3]] == [2, 3, 4]


def test_action_for_tick_is_nearest_in_time():
    s = ChunkSchedule(execute_horizon=10, blending="none")
    s.push(chunk(1000, np.arange(10)), next_tick_ns=0)
    assert s.action_at(3 * DT + 1000 + DT // 3, DT // 2).action[0] == 3
    assert s.planned_until_ns == 1000 + 9 * DT


def test_chunk_entirely_in_the_past_serves_nothing():
    s = ChunkSchedule(execute_horizon=5)
    assert s.push(chunk(0, 1.0, n=4), next_tick_ns=10 * DT) == 4
    assert s.action_at(10 * DT, DT // 2) is None


def test_linear_crossfade_moves_gradually_to_new_chunk():
    s = ChunkSchedule(execute_horizon=6, blending="linear", blend_ticks=3)
    s.push(chunk(0, 0.0), next_tick_ns=0)
    s.push(chunk(0, 1.0), next_tick_ns=DT)  # overlaps ticks 1..5
    values = [s.action_at(k * DT, DT // 2).action[0] for k in range(1, 6)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_none_blending_replaces():
    s = ChunkSchedule(execute_horizon=6, blending="none")
    s.push(chunk(0, 0.0), next_tick_ns=0)
    s.push(chunk(0, 1.0), next_tick_ns=DT)
    assert s.action_at(DT, DT // 2).action[0] == 1.0


def test_exponential_weights_increase_to_one():
    w = [blend_weight("exponential", i, 3, 0.5) for i in range(10)]
    assert all(0 < a < b <= 1 for a, b in zip(w, w[1:]))
    s = ChunkSchedule(execute_horizon=6, blending="exponential", decay=0.5)
    s.push(chunk(0, 0.0), next_tick_ns=0)
    s.push(chunk(0, 1.0), next_tick_ns=DT)
    assert s.action_at(DT, DT // 2).action[0] == pytest.approx(w[0])


def test_new_chunk_takes_over_from_the_next_tick():
    s = ChunkSchedule(execute_horizon=2, blending="none")
    s.push(chunk(0, 0.0), next_tick_ns=0)  # ticks 0, 1
    s.push(chunk(0, 1.0), next_tick_ns=DT)  # ticks 1, 2
    assert [s.action_at(k * DT, DT // 2).action[0] for k in (1, 2)] == [1.0, 1.0]
    assert s.action_at(3 * DT, DT // 2) is None


def test_late_shift_serves_a_late_chunk_from_the_next_tick_covering_the_latency():
    # 8 actions; the chunk arrives 6 ticks after its observation with a 6-tick inference latency: 'drop' serves
    # the 2 fresh actions on time, 'shift' serves from index 1 on (7 actions: the latency plus one), late.
    late = chunk(0, np.arange(8))
    drop = ChunkSchedule(execute_horizon=5, blending="none")
    drop.push(late, next_tick_ns=6 * DT, latency_ns=6 * DT)
    assert [drop.action_at(k * DT, DT // 2) is not None for k in range(6, 10)] == [True, True, False, False]
    shift = ChunkSchedule(execute_horizon=5, blending="none", late="shift")
    dropped = shift.push(late, next_tick_ns=6 * DT, latency_ns=6 * DT)
    served = [shift.action_at(k * DT, DT // 2) for k in range(6, 14)]
    assert dropped == 1 and shift.late_shifted == 1
    assert [p.j if p else None for p in served] == [1, 2, 3, 4, 5, 6, 7, None]
    # A chunk with execute_horizon fresh actions left is served on time, as by 'drop'.
    on_time = ChunkSchedule(execute_horizon=5, blending="none", late="shift")
    on_time.push(chunk(0, np.arange(8)), next_tick_ns=2 * DT, latency_ns=6 * DT)
    assert on_time.late_shifted == 0 and on_time.action_at(2 * DT, DT // 2).j == 2
    with pytest.raises(ValueError):
        ChunkSchedule(execute_horizon=5, late="later")
