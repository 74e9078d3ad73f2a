"""`anchorvla`: one entry point, subcommands imported only when used (so `run` with an ONNX bundle never
imports torch). A `UserError` anywhere ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from anchorvla.errors import UserError
from onboard.journal import StderrHandler

# name -> (module, help). Each module has add_arguments(parser) and main(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("anchorvla.commands.run", "run the controller"),
    "bench": ("anchorvla.commands.bench", "run a benchmark and print its table"),
    "emulate": (
        "anchorvla.commands.emulate",
        "run an emulated device until interrupted (servos: an STS3215 bus on a pty; go2: a Go2 on DDS over lo)",
    ),
    "calibrate": ("anchorvla.commands.calibrate", "calibrate the SO-101 arm or import a LeRobot calibration"),
    "service": ("anchorvla.commands.service", "run as a systemd service, or install the unit and udev rules"),
    "ctl": ("anchorvla.commands.ctl", "operator control of a running controller (status, start, stop, estop, ...)"),
    "replay": ("tools.replay", "re-run the schedule/residual/safety decisions on a recorded episode"),
    "doctor": ("tools.doctor", "list what this machine has and lacks to run the controller, and how to fix it"),
    "anchors": ("tools.anchors", "K-means anchor vocabulary over a dataset's normalised action chunks"),
    "train": ("tools.train", "train the policy (stage 1: LoRA + head, stage 2: residual) into a checkpoint"),
    "record": ("anchorvla.commands.record", "teleoperated demonstrations (leader arm, gamepad or Go2 remote) into a LeRobot dataset"),
    "view": ("tools.view", "open one episode of a dataset in rerun (images, state, actions; the liveview extra)"),
    "sim": ("sim.record", "the emulated robot's tasks: `sim record` scripted-expert episodes into a dataset"),
    "eval": ("sim.eval", "closed-loop evaluation on the emulated robot: success, smoothness, timing, variants"),
    "export": ("tools.export", "export a checkpoint to an ONNX deployment bundle"),
    "quantize": ("tools.quantize", "add an FP16, INT8 or INT4 variant to a bundle"),
    "build-trt": ("tools.build_trt", "build TensorRT engines for a bundle on this device"),
    "verify": ("tools.verify", "check a bundle against the FP32 torch reference and record its gates"),
}

# `anchorvla bench NAME`: name -> (module, help). Each module has add_arguments(parser) and main(args) -> int.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "loop": ("tools.bench_loop", "fast-loop timing at 15/50/100 Hz with inference running, vs a bare sleep"),
    "servos": ("tools.bench_servos", "servo bench: scan, table dump, EEPROM check, sweep, bus cycle time"),
    "cameras": ("tools.bench_cameras", "camera playback: frame rate, timestamp jitter, frame age"),
    "go2": ("tools.bench_go2", "Go2 client vs emulated Go2 on lo: Move on-wire delay, start-up, blocking"),
    "service": ("tools.bench_service", "fast-loop cost of recording and the live view, vs the plain controller"),
    "faults": ("tools.bench_faults", "fault scenarios through the Runtime: detection, reaction, commands outside the envelope"),
    "envelope": ("tools.bench_envelope", "safety envelope cost per tick, beside a bare clip in the same run"),
    "ablation": ("tools.bench_ablation", "anchors vs plain diffusion vs L1 regression (+ residual) on a two-route task"),
    "delay": ("tools.bench_delay", "closed-loop success, time and seam jerk vs inference latency, variants side by side"),
    "engines": ("tools.bench_engines", "per-chunk latency and peak memory of torch, ONNX Runtime and TensorRT engines"),
    "seqlen": ("tools.bench_seqlen", "backbone latency vs sequence length 256-4096: Qwen2 transformer vs Mamba, growth exponents"),
}


def _add_lazy(sub, name: str, module: str, help_text: str):
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(_module=module)
    # Arguments are added when this subcommand is the one chosen (see main), keeping start-up cheap.
    return parser


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anchorvla", description="AnchorVLA onboard controller")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = _add_lazy(sub, name, module, help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except UserError as exc:
        print(f"anchorvla: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
