"""`anchorvla calibrate arm --port PORT --out FILE` and `anchorvla calibrate import LEROBOT_JSON --out FILE`."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from drivers.types import SO101_JOINTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = sub.add_parser("arm", help="calibrate an SO-101 (homing at mid-range, ranges by hand)")
    p.add_argument("--port", required=True, help="serial device of the servo adapter")
    p.add_argument("--out", required=True, type=Path, help="calibration file to write")
    p.add_argument("--baudrate", type=int, default=1_000_000)
    p.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p = sub.add_parser("import", help="convert a LeRobot SO-101 calibration JSON into ours")
    p.add_argument("lerobot_json", type=Path)
    p.add_argument("--out", required=True, type=Path)


def _table(mins: dict[int, int], positions: dict[int, int], maxes: dict[int, int]) -> str:
    lines = [f"{'joint':<14}{'id':>4}{'min':>7}{'pos':>7}{'max':>7}"]
    for name, i in zip(SO101_JOINTS, positions, strict=False):
        lines.append(f"{name:<14}{i:>4}{mins[i]:>7}{positions[i]:>7}{maxes[i]:>7}")
    return "\n".join(lines)


def _calibrate_arm(args: argparse.Namespace) -> int:
    from drivers.feetech.bus import FeetechBus
    from drivers.feetech.calibrate import (
        build_calibration,
        record_ranges,
        release,
        set_half_turn_homing,
        write_calibration,
    )
    from drivers.feetech.calibration import save_calibration
    from drivers.feetech.so101 import check_servos

    ids = tuple(args.ids)
    bus = FeetechBus(args.port, args.baudrate)
    bus.open()
    try:
        check_servos(bus, ids)
        release(bus, ids)
        input("Torque is off. Move the arm to the middle of every joint's range, then press Enter... ")
        offsets = set_half_turn_homing(bus, ids)
        print("Now move every joint through its full range; press Enter when done.")
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        lines = len(ids) + 1

        def show(mins, positions, maxes):
            if not sys.stdout.isatty():
                return  # no live redraw into a file or pipe; the final table is printed below
            sys.stdout.write(f"\x1b[{lines}F" if show.drawn else "")
            sys.stdout.write(_table(mins, positions, maxes) + "\n")
            sys.stdout.flush()
            show.drawn = True

        show.drawn = False
        mins, maxes = record_ranges(bus, ids, stop, show)
        if not sys.stdout.isatty():
            print(_table(mins, {i: (mins[i] + maxes[i]) // 2 for i in ids}, maxes))
        calibration = build_calibration(SO101_JOINTS[: len(ids)], ids, offsets, mins, maxes)
        write_calibration(bus, calibration)
        save_calibration(args.out, calibration)
        print(f"wrote {args.out} and the servos' EEPROM")
    finally:
        bus.close()
    return 0


def main(args: argparse.Namespace) -> int:
    if args.what == "import":
        from drivers.feetech.calibration import load_calibration, save_calibration

        calibration = load_calibration(args.lerobot_json)
        save_calibration(args.out, calibration)
        print(f"imported {len(calibration.joints)} joints from {args.lerobot_json} into {args.out}")
        return 0
    return _calibrate_arm(args)
