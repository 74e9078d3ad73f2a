"""`anchorvla bench go2`: the Go2 client against an emulated Go2 in another process, DDS on loopback.

Measured in one run: how long after the tick deadline each Move is received by the emulator (on the
wire), how long move()/read_state() hold the fast loop (normal, robot silent, robot not publishing),
start-up to the first accepted Move, the pose after Move at 15 Hz against the integrated commands, and
how fast a missing robot or a silent state topic is reported.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the Move phase")
    parser.add_argument("--rate-hz", type=float, default=15.0, help="fast-loop rate")
    parser.add_argument(
        "--domain-id", type=int, default=90, help="first of the 3 DDS domain ids used (on lo)"
    )
    parser.add_argument(
        "--state-rate-hz", type=float, default=100.0, help="emulator's rt/sportmodestate rate"
    )


def _row(name: str, p: dict, unit: str) -> str:
    return f"{name:<44}{p['n']:>6}{p['p50']:>10.3f}{p['p99']:>10.3f}{p['max']:>10.3f}  {unit}"


def main(args: argparse.Namespace):
    from drivers.unitree import sport_api as api
    from drivers.unitree.dds_config import dds_config_xml

    os.environ["CYCLONEDDS_URI"] = dds_config_xml("lo")
    from drivers.emulated.go2_process import Go2EmulatorProcess
    from tools import go2_scenarios as sc

    twist = (0.4, 0.0, 0.2)
    d = args.domain_id
    with Go2EmulatorProcess(domain_id=d, rate_hz=args.state_rate_hz, limits={"transition_s": 0.5}) as emu:
        seq = sc.drive_sequence(emu, d, args.seconds, args.rate_hz, twist)
    with Go2EmulatorProcess(
        domain_id=d + 1, rate_hz=args.state_rate_hz, initial_mode=api.MODE_JOINT_LOCK
    ) as emu:
        start = sc.startup_to_first_move(emu, d + 1, args.rate_hz)
        silent = sc.fault_silent(emu, d + 1, args.rate_hz, rpc_timeout_s=0.3)
        stale = sc.fault_no_state(emu, d + 1, args.rate_hz, max_state_age_s=0.1)
    missing = sc.no_robot(d + 2, state_timeout_s=1.0)

    wire = sc.percentiles(seq["wire_delay_ms"])
    rows = {
        "Move on the wire after the tick deadline": wire,
        "  of which: loop wake-up after the deadline": sc.percentiles(seq["lateness_ms"]),
        "move() call, robot answering": sc.percentiles(seq["move_call_ms"]),
        "read_state() call, robot answering": sc.percentiles(seq["read_call_ms"]),
        "move() call, robot silent": sc.percentiles(silent["move_call_ms"]),
        "read_state() call, state stopped": sc.percentiles(stale["read_call_ms"]),
    }
    print(
        f"Go2 client vs emulated Go2 (separate process, DDS on lo), fast loop {args.rate_hz:g} Hz, {args.seconds:g} s"
    )
    print(f"{'':<44}{'n':>6}{'p50':>10}{'p99':>10}{'max':>10}")
    for name, p in rows.items():
        print(_row(name, p, "ms"))
    print(f"modes seen: {' -> '.join(api.mode_name(m) for m in seq['modes'])}")
    print(f"Moves sent {seq['moves_sent']}, accepted by the emulator {seq['moves_accepted']}")
    print(
        f"pose after Move{twist}: emulator ({seq['pose'][0]:.3f}, {seq['pose'][1]:.3f}, {seq['pose'][2]:.3f}) vs integrated "
        f"commands ({seq['reference_pose'][0]:.3f}, {seq['reference_pose'][1]:.3f}, {seq['reference_pose'][2]:.3f}): "
        f"position error {100 * seq['position_error_fraction']:.2f}% of the path, yaw error {100 * seq['yaw_error_fraction']:.2f}%"
    )
    print(
        f"start-up (standing locked -> BalanceStand): start() {start['start_s']:.3f} s, first accepted Move {start['first_accepted_move_s']:.3f} s"
    )
    print(
        f"robot silent: stop_move() returned after {silent['stop_move_s']:.3f} s with: {silent['stop_move_error']}"
    )
    print(
        f"state stopped: read_state() failed {stale['ticks_to_detect']} tick(s) after the last sample (limit 0.1 s)"
    )
    print(f"no robot: start() failed after {missing['seconds']:.2f} s with: {missing['message']}")

    figures = {
        "rate_hz": args.rate_hz,
        "seconds": args.seconds,
        "calls_ms": rows,
        "modes": seq["modes"],
        "moves_sent": seq["moves_sent"],
        "moves_accepted": seq["moves_accepted"],
        "position_error_fraction": seq["position_error_fraction"],
        "yaw_error_fraction": seq["yaw_error_fraction"],
        "startup_first_move_s": start["first_accepted_move_s"],
        "silent_stop_move_s": silent["stop_move_s"],
        "stale_ticks_to_detect": stale["ticks_to_detect"],
        "no_robot_s": missing["seconds"],
    }
    ok = (
        wire["p50"] <= 2.0
        and start["first_accepted_move_s"] < 1.0
        and seq["position_error_fraction"] <= 0.02
        and seq["yaw_error_fraction"] <= 0.02
        and stale["ticks_to_detect"] is not None
        and stale["ticks_to_detect"] <= 3
        and max(rows["move() call, robot silent"]["max"], rows["read_state() call, state stopped"]["max"])
        < 5.0
    )
    return figures, ok
