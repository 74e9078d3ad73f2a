"""Teleoperation through the controller: the real SO-101 driver on the emulated bus follows the emulated leader
arm (a second pty bus moved by a scripted hand) through the safety envelope, and the session records episodes of
(state, action, frames), ending, re-recording and discarding them on the operator's word."""

from __future__ import annotations

import numpy as np

from drivers.types import Sticks
from onboard.config import BaseTeleopConfig, Config
from onboard.devices import build_arm, build_base, build_cameras, build_leader
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.teleop import ButtonPresses, OperatorActions, TeleopSession, base_velocity

RATE = 15.0


def _config() -> Config:
    return Config.model_validate({
        "robot": {"arm": {"driver": "emulated"}, "base": {"driver": "standin"},
                  "cameras": [{"name": "front", "driver": "standin", "width": 32, "height": 24, "fps": 30}]},
        "policy": {"execute_horizon": 1, "blending": {"mode": "none"}, "residual": False},
        "control": {"rate_hz": RATE},
        "teleop": {"leader": {"driver": "emulated"}},
    })  # fmt: skip


def _session(config, episodes, episode_s, reset_s, events=()):
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    leader = build_leader(config)
    actions = OperatorActions(tuple(devices.arm.joint_names), round(1e9 / RATE))
    runtime = Runtime(config, devices, actions, policy_loop=False)
    saved = []
    session = TeleopSession(
        runtime, leader, devices.arm.calibration, None, config.teleop.base, saved.append, "wave",
        episodes, round(episode_s * RATE), round(reset_s * RATE),
    )  # fmt: skip
    for tick, line in events:  # operator keys at given ticks
        runtime.fast.tick_listeners.insert(0, lambda t, n=[0], k=tick, s=line: (n.__setitem__(0, n[0] + 1), n[0] == k and session.key(s)))
    leader.start()
    try:
        result = run_event_loop(runtime.run(duration_s=20.0))
    finally:
        leader.stop()
        session.close()
    return result, saved


def test_the_arm_follows_the_leader_through_the_envelope_and_episodes_are_recorded():
    result, saved = _session(_config(), episodes=2, episode_s=1.0, reset_s=0.4)
    assert result["exit_reason"] == "recorded"
    assert len(saved) == 2
    for episode in saved:
        assert episode.task == "wave" and len(episode.actions) == 15
        assert episode.states.shape == (15, 9) and episode.actions.shape == (15, 9)
        assert episode.images["front"].shape == (15, 24, 32, 3)
    # The commands sent are the leader's pose (base channels zero: no sticks), passed by the envelope: small steps
    # per tick; the follower's measured joints (the states) follow them a few ticks behind.
    actions = np.concatenate([e.actions for e in saved])
    assert np.all(actions[:, :3] == 0)
    assert np.ptp(actions[:, 3]) > 0.2  # the hand swept shoulder_pan
    assert np.all(np.abs(np.diff(saved[-1].actions[:, 3:], axis=0)) < 0.5)
    settled = saved[-1]  # the first rows catch up from the start pose at the envelope's rate limit
    assert np.max(np.abs(settled.actions[:-4, 3:8] - settled.states[4:, 3:8])) < 0.3
    assert result["safety"]["faults"] == 0


def test_operator_rerecords_and_discards():
    # Tick 5: re-record (the first 5 rows go); tick 12: discard; then one full episode is kept.
    result, saved = _session(_config(), episodes=1, episode_s=1.0, reset_s=0.2, events=[(5, "r"), (12, "d")])
    assert result["exit_reason"] == "recorded"
    assert len(saved) == 1 and len(saved[0].actions) == 15


def test_sticks_drive_the_base_past_a_dead_zone_and_buttons_count_once_per_press():
    cfg = BaseTeleopConfig(max_vx=0.4, max_vy=0.2, max_wz=0.8, deadzone=0.1)
    assert np.allclose(base_velocity(Sticks(0, lx=0.05, ly=0.05, rx=-0.05), cfg), 0.0)
    vx, vy, wz = base_velocity(Sticks(0, lx=-1.0, ly=1.0, rx=-1.0), cfg)
    assert (vx, vy, wz) == (0.4, 0.2, 0.8)  # up: forward, left: +y, right stick left: turn left
    presses = ButtonPresses()
    assert presses.events(Sticks(0, buttons=frozenset({"start"}))) == ["end"]
    assert presses.events(Sticks(1, buttons=frozenset({"start"}))) == []  # still held
    assert presses.events(Sticks(2, buttons=frozenset({"select", "start"}))) == ["rerecord"]
