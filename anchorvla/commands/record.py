"""`anchorvla record --config ROBOT.yaml --out DATASET --task "instruction" [--episodes N --episode-s S --reset-s S]`

Teleoperated demonstrations at the control rate into a LeRobot dataset: the arm follows the SO-101 leader arm
(`teleop.leader`), the base the gamepad or the Go2's remote (`teleop.base`), both through the safety envelope;
both cameras are recorded. How an episode ends, is re-recorded or discarded: onboard/teleop.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from anchorvla.errors import UserError
from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_leader, build_sticks
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.telemetry import format_summary
from onboard.teleop import OperatorActions, TeleopSession
from policy_runtime.dataset import DatasetWriter
from sim.session import needs_world

# The operator's action is this tick's, and only this tick's: no horizon, no blending, no residual.
TELEOP_POLICY = {"policy": {"execute_horizon": 1, "blending": {"mode": "none"}, "residual": False}}
OK_EXITS = ("recorded", "recording_quit", "signal:SIGINT", "signal:SIGTERM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the robot's config, with a teleop section")
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create (LeRobot v3)")
    parser.add_argument("--task", required=True, help='the instruction these demonstrations show, e.g. "touch the red marker"')
    parser.add_argument("--episodes", type=int, default=10, help="episodes to record (default 10)")
    parser.add_argument("--episode-s", type=float, default=30.0, help="longest episode in seconds (default 30)")
    parser.add_argument("--reset-s", type=float, default=10.0, help="reset period between episodes (default 10)")


def _check(args: argparse.Namespace) -> None:
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1 (got {args.episodes})")
    if args.episode_s <= 0 or args.reset_s < 0:
        raise UserError("--episode-s must be > 0 and --reset-s >= 0 seconds")
    if not args.task.strip():
        raise UserError('--task must name the instruction, e.g. --task "touch the red marker"')
    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"{args.out} exists and is not empty: choose a new dataset directory")


def _read_terminal(session: TeleopSession) -> None:
    for line in sys.stdin:
        session.key(line)


def main(args: argparse.Namespace) -> int:
    _check(args)
    config = load_config(args.config, TELEOP_POLICY)
    logging.getLogger().setLevel(config.telemetry.log_level if not args.verbose else logging.DEBUG)
    if config.robot.arm.driver not in ("feetech", "emulated"):
        raise UserError("teleoperation drives an SO-101: robot.arm.driver must be 'feetech' or 'emulated'")
    world = None
    if needs_world(config):
        from drivers.emulated.world import World

        world = World()
    devices = Devices(build_arm(config, world), build_base(config, world), build_cameras(config, world))
    leader = build_leader(config)
    sticks = build_sticks(config, devices.base)
    joints = tuple(devices.arm.joint_names)
    rate = config.control.rate_hz
    actions = OperatorActions(joints, round(1e9 / rate))
    writer = DatasetWriter(
        args.out, fps=rate, action_layout=list(actions.channels), proprio_layout=list(actions.channels),
        cameras=[c.name for c in devices.cameras], robot_type="so101_on_go2",
    )  # fmt: skip
    runtime = Runtime(config, devices, actions, policy_loop=False)
    session = TeleopSession(
        runtime, leader, devices.arm.calibration, sticks, config.teleop.base, writer.add_episode, args.task,
        args.episodes, round(args.episode_s * rate), round(args.reset_s * rate),
    )  # fmt: skip
    if sys.stdin.isatty():
        print("Enter: save the episode | r: record it again | d: discard it | q: quit", flush=True)
        threading.Thread(target=_read_terminal, args=(session,), daemon=True).start()
    if sticks is not None:  # the remote reads through the base: only while it is up
        runtime.ready_listeners.append(sticks.start)
        runtime.stop_listeners.append(lambda _reason: sticks.stop())
    leader.start()
    try:
        result = run_event_loop(runtime.run())
    finally:
        leader.stop()
        saved = session.close()
        writer.close()
    result["recorded_episodes"] = saved
    print(format_summary(result))
    print(f"recorded {saved} episode(s) of '{args.task}' into {args.out}")
    return 0 if result["exit_reason"] in OK_EXITS else 1
