"""VLASH's rolled-forward observation: the slow loop infers from the arm pose the queued plan will have reached one
latency estimate ahead (on the tick grid), stamped with that time; without a plan reaching that far, as measured."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.types import ArmState
from onboard.config import Config
from onboard.loops import build_loops
from onboard.standins import StandinArm, StandinEngine
from policy_runtime.types import ActionChunk, Observation

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def test_rolled_forward_takes_the_planned_pose_one_latency_ahead():
    config = Config.model_validate({"policy": {"roll_forward": True}, "control": {"rate_hz": 10}})
    engine = StandinEngine(JOINTS, 100_000_000)
    loops = build_loops(config=config, arm=StandinArm(JOINTS), base=None, cameras=[], engine=engine)
    slow, period = loops.slow, loops.fast.period_ns
    t0 = 5 * period
    measured = ArmState(t0, JOINTS, np.zeros(6), np.zeros(6))
    obs = Observation(t0, measured, None, {}, "wave")
    assert slow.rolled_forward(obs) is obs  # no latency measured yet, no plan: as measured

    actions = np.zeros((8, 3 + 6))
    actions[:, 3] = np.arange(8) * 0.1  # shoulder_pan 0.0, 0.1, ... at ticks 5, 6, ...
    loops.schedule.push(ActionChunk(t0, period, engine.channels, actions), t0)
    loops.stats.inference_ms.add(250.0)  # 2.5 ticks: rolled 3 ticks ahead
    rolled = slow.rolled_forward(obs)
    assert rolled.t_ns == t0 + 3 * period
    assert rolled.arm.positions[0] == pytest.approx(0.3) and np.all(rolled.arm.positions[1:] == 0)
    assert rolled.previous_arm is measured  # the state delta spans the roll
    loops.stats.inference_ms.add(2000.0)  # further than the plan reaches: as measured
    assert slow.rolled_forward(obs) is obs
    slow.close()
