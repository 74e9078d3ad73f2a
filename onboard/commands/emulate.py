"""`anchorvla emulate servos --link PATH`: an STS3215 bus on a pseudo-terminal until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from drivers.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = sub.add_parser(
        "servos", help="six STS3215 servos (an SO-101) on a pty", description="six STS3215 on a pty"
    )
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


def main(args: argparse.Namespace) -> int:
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
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell's background job ignores it by default
        signal.signal(sig, lambda *_: done.set())
    with emulator:
        for s in emulator.servos:
            s.faults.drop_reply = args.drop_reply
            s.set_value("Return_Delay", args.return_delay)
        print(
            f"emulating STS3215 ids {args.ids} at {args.baudrate} baud on {emulator.port} (link {args.link}); Ctrl-C to stop",
            flush=True,
        )
        while not done.wait(0.5):
            pass
    return 0
