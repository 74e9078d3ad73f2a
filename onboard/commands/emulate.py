"""`anchorvla emulate DEVICE ...`: run a device emulator until interrupted (Ctrl-C or SIGTERM).

One sub-command per emulated device; each keeps its arguments and its run function to itself.
"""

from __future__ import annotations

import argparse
import signal
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="device", required=True, metavar="DEVICE")
    add_go2_arguments(sub.add_parser("go2", help="an emulated Go2 on DDS over loopback (sport RPC + state)"))


def main(args: argparse.Namespace) -> int:
    return args._emulate(args)


def _wait_for_signal(duration_s: float | None) -> None:
    """Block until SIGINT/SIGTERM (or `duration_s`)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(duration_s)


# --- go2 ---


def add_go2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--domain-id", type=int, default=0, help="DDS domain (0..232); the interface is always lo"
    )
    parser.add_argument("--rate-hz", type=float, default=100.0, help="rt/sportmodestate publishing rate")
    parser.add_argument(
        "--mode", choices=sorted(_go2_start_modes()), default="lie_down", help="mode at start"
    )
    parser.add_argument("--silent", action="store_true", help="fault: answer no RPC request")
    parser.add_argument("--no-state", action="store_true", help="fault: publish no state")
    parser.add_argument("--reply-delay-s", type=float, default=0.0, help="fault: delay every RPC reply")
    parser.add_argument(
        "--drop-fraction", type=float, default=0.0, help="fault: drop this fraction of messages"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop after S seconds (default: until interrupted)"
    )
    parser.set_defaults(_emulate=run_go2)


def _go2_start_modes() -> dict[str, int]:
    from drivers.unitree import sport_api as api  # constants only: no DDS import

    return {
        "lie_down": api.MODE_LIE_DOWN,
        "locked": api.MODE_JOINT_LOCK,
        "balance_stand": api.MODE_BALANCE_STAND,
    }


def run_go2(args: argparse.Namespace) -> int:
    from drivers.emulated.go2 import Go2Emulator, Go2Faults
    from drivers.errors import UserError

    if not 0 <= args.domain_id <= 232:
        raise UserError(f"--domain-id must be 0..232 (got {args.domain_id})")
    if not 0 < args.rate_hz <= 1000:
        raise UserError(f"--rate-hz must be in (0, 1000] (got {args.rate_hz})")
    if not 0 <= args.drop_fraction <= 1 or args.reply_delay_s < 0:
        raise UserError("--drop-fraction must be 0..1 and --reply-delay-s >= 0")
    faults = Go2Faults(args.silent, args.no_state, args.reply_delay_s, args.drop_fraction)
    emulator = Go2Emulator("lo", args.domain_id, args.rate_hz, _go2_start_modes()[args.mode], faults=faults)
    emulator.start()
    print(
        f"emulated Go2 on lo, DDS domain {args.domain_id}: sport RPC on rt/api/sport/request, state at "
        f"{args.rate_hz:g} Hz on rt/sportmodestate, mode {args.mode}; Ctrl-C to stop",
        flush=True,
    )
    try:
        _wait_for_signal(args.duration)
    finally:
        emulator.stop()
    x, y, yaw = emulator.pose()
    print(
        f"stopped: {len(emulator.received)} requests served, pose x={x:.3f} m y={y:.3f} m yaw={yaw:.3f} rad"
    )
    return 0
