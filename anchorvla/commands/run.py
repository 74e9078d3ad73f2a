"""`anchorvla run --config PATH [--duration S] [--summary PATH]`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from anchorvla.errors import UserError
from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.startup_check import check_policy_inputs
from onboard.telemetry import format_summary, write_summary
from sim.session import needs_world

OK_EXITS = ("duration", "signal:SIGINT", "signal:SIGTERM", "task_success")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML config (e.g. configs/sim.yaml)")
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: run until signalled)"
    )
    parser.add_argument("--summary", type=Path, default=None, help="write the run summary as JSON here")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0 seconds (got {args.duration})")
    colour_task = config.sim.task is not None and config.sim.task.endswith("_color")  # gives no goal position
    check_policy_inputs(config, goal_supplied=config.sim.task is not None and not colour_task)  # before any device
    logging.getLogger().setLevel(config.telemetry.log_level if not args.verbose else logging.DEBUG)
    world = session = None
    if needs_world(config):
        from drivers.emulated.world import World

        world = World()
    if config.sim.task is not None:
        if world is None:
            raise UserError(
                "sim.task needs the emulated robot (robot.arm.driver 'emulated'; see configs/sim.yaml)"
            )
        from sim.session import SimSession

        session = SimSession(config, world)
    devices = Devices(build_arm(config, world), build_base(config, world), build_cameras(config, world))
    engine = build_engine(config)
    if session is not None:
        engine = session.wrap(engine)
    runtime = Runtime(config, devices, engine)
    if session is not None:
        session.attach(runtime)
    result = run_event_loop(runtime.run(args.duration))
    if session is not None:
        result["task"] = session.result()
    print(format_summary(result))
    if args.summary is not None:
        write_summary(args.summary, result)
    return 0 if result["exit_reason"] in OK_EXITS else 1
