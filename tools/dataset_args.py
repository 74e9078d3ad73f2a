"""The dataset options `train` and `anchors` share: --lerobot-units and --calibration say how a LeRobot SO-101
dataset stores its joints (policy_runtime/units.py); our own datasets declare SI units and need neither."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """How a LeRobot SO-101 dataset stores its joints (policy_runtime/units.py); ours declare SI units."""
    parser.add_argument(
        "--lerobot-units", choices=("degrees", "range"), default="degrees",
        help="a LeRobot SO-101 dataset's joints: degrees (use_degrees=True, lerobot >= 0.4) or -100..100 (range)",
    )  # fmt: skip
    parser.add_argument(
        "--calibration", type=Path, default=None,
        help="the arm's calibration (ours or LeRobot's JSON) for a LeRobot SO-101 dataset (default: URDF ranges)",
    )  # fmt: skip


def load(args: argparse.Namespace, horizon: int, with_images: bool = True):
    """The dataset of --dataset, LeRobot units converted as --lerobot-units/--calibration say (printed)."""
    from drivers.feetech.calibration import load_calibration
    from policy_runtime.dataset import load_dataset
    from policy_runtime.units import LeRobotUnits

    calibration = None if args.calibration is None else load_calibration(args.calibration)
    data = load_dataset(args.dataset, horizon, with_images, LeRobotUnits(args.lerobot_units, calibration))
    if data.conversion:
        print(f"note: {data.conversion}")
    return data
