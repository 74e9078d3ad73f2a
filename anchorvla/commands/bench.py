"""`anchorvla bench NAME [--json PATH]`: every benchmark prints a table and can write the same figures."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from anchorvla.cli import BENCHMARKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, (module, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
        p.set_defaults(_bench_module=module)
        importlib.import_module(module).add_arguments(p)


def main(args: argparse.Namespace) -> int:
    module = importlib.import_module(args._bench_module)
    figures, ok = module.main(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if ok else 1
