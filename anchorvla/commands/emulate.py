"""`anchorvla emulate DEVICE ...`: run a device emulator until interrupted (Ctrl-C or SIGTERM).

One sub-command per emulated device, each with its own arguments and run function:
`servos` (an STS3215 bus on a pseudo-terminal), `go2` (a Go2 on DDS over loopback).
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from anchorvla.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    add_servos_arguments(
        sub.add_parser(
            "servos", help="six STS3215 servos (an SO-101) on a pty", description="six STS3215 on a pty"
        )
    )
    add_go2_arguments(sub.add_parser("go2", help="an emulated Go2 on DDS over loopback (sport RPC + state)"))


def main(args: argparse.Namespace) -> int:
    return args._emulate(args)


def _wait_for_signal(duration_s: float | None) -> None:
    """Block until SIGINT/SIGTERM (or `duration_s`). SIGINT too: a shell's background job ignores it by default."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(duration_s)


# --- servos ---


def add_servos_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--link", required=True, type=Path, help="symlink to create to the pty (open it as the serial port)"
    )
    p.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--baudrate", type=int, default=1_000_000)
    p.add_argument(
        "--calibration", type=Path, default=None, help="write this calibration into the EEPROM first"
    )
    p.add_argument(
        "--return-delay", type=int, default=250, help="Return_Delay register (2 us units; factory 250)"
    )
    p.add_argument(
        "--drop-reply", type=float, default=0.0, help="fraction of replies to drop (fault injection)"
    )
    p.set_defaults(_emulate=run_servos)


def run_servos(args: argparse.Namespace) -> int:
    from drivers.emulated.servo_bus import ServoBusEmulator
    from drivers.feetech.calibration import default_calibration, load_calibration

    if args.link.exists() and not args.link.is_symlink():
        raise UserError(f"--link {args.link} exists and is not a symlink; choose another path")
    if len(set(args.ids)) != len(args.ids) or not all(0 <= i < 254 for i in args.ids):
        raise UserError(f"--ids must be distinct servo ids 0..253 (got {args.ids})")
    if args.calibration is not None:
        calibration = load_calibration(args.calibration)
    else:
        calibration = default_calibration(tuple(args.ids)) if len(args.ids) == 6 else None
    emulator = ServoBusEmulator(
        ids=tuple(args.ids), baudrate=args.baudrate, calibration=calibration, link=args.link
    )
    with emulator:
        for s in emulator.servos:
            s.faults.drop_reply = args.drop_reply
            s.set_value("Return_Delay", args.return_delay)
        print(
            f"emulating STS3215 ids {args.ids} at {args.baudrate} baud on {emulator.port} (link {args.link}); Ctrl-C to stop",
            flush=True,
        )
        _wait_for_signal(None)
    return 0


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
