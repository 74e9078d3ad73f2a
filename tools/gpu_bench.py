"""TensorRT at the paper size on an NVIDIA GPU, in one command (`bash tools/gpu_bench.sh [WORK]`): builds the
bundle, FP16 and INT8 TensorRT engines, verifies them against the stored FP32 references and times them.

NOT RUN ON A GPU YET: no GPU was available where this was written; the steps below were checked on a CPU
machine as far as one can (arguments, the refusal without TensorRT or a GPU, the bundle it builds from, at demo
size). The first GPU run is the test of the rest.

Steps, each timed:
1. check: TensorRT and a CUDA GPU are present (else one line, exit 2, before anything is built);
2. bundle: the paper-size random checkpoint (Qwen2.5-0.5B dimensions, 2 x 224 px, 64 queries, M = 20,
   S_tr = 10), exported, INT8 as static QDQ calibrated on synthetic observations (what TensorRT's explicit
   quantization takes), the FP32 torch outputs on held-out observations stored as the references;
3. engines: `build-trt --precision fp16 int8` (timing cache in the bundle);
4. verify: trt-fp16 and trt-int8 against the stored references (cosine >= 0.99, anchor agreement >= 0.98);
5. time: per chunk as the engine runs it (inputs copied in, outputs out, backbone then head), and the device
   work alone replayed as one CUDA graph (backbone, bridge copy, head), which removes the launch gaps between
   TensorRT's kernels; goal: FP16 chunk <= 9.3 ms (twice the paper's 53.6 Hz).
A bundle an earlier run left verified in WORK is used again (`--fresh` rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

GOAL_MS = 9.3  # 2x the paper's 53.6 Hz
PRECISIONS = ("fp16", "int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/gpu_bench.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, nargs="?", default=Path("gpu-bench"), help="where the bundle goes")
    parser.add_argument("--size", choices=["paper", "demo"], default="paper")
    parser.add_argument("--calibration", type=int, default=16, help="synthetic observations for static INT8")
    parser.add_argument("--verify-count", type=int, default=10, help="held-out observations for the gates")
    parser.add_argument("--repeats", type=int, default=200, help="timed chunks per engine")
    parser.add_argument("--fresh", action="store_true", help="rebuild the bundle even if WORK holds one")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="build and verify the bundle (CPU), then stop: no GPU needed",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    for name in ("calibration", "verify_count", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def prepare_bundle(work: Path, size: str, calibration: int, verify_count: int, fresh: bool) -> Path:
    """Random checkpoint -> bundle with fp32 and static QDQ int8, FP32 references stored. Returns the bundle."""
    from policy_runtime.bundle import checkpoint_sha256, read_manifest
    from policy_runtime.model.checkpoint import load_checkpoint
    from tools.bundle_samples import CALIBRATION_SEED, HELD_OUT_SEED, synthetic_samples
    from tools.demo_checkpoint import build_random_checkpoint
    from tools.export import export_policy
    from tools.quantize import quantize_bundle
    from tools.verify import verify_bundle

    bundle = work / f"{size}-bundle"
    if not fresh and (bundle / "manifest.json").is_file():
        manifest = read_manifest(bundle)
        if manifest.references is not None and "int8" in manifest.variants:
            print(f"bundle: using {bundle} (built by an earlier run; --fresh rebuilds it)", flush=True)
            return bundle
    if bundle.exists() and any(bundle.iterdir()):
        raise UserError(f"{bundle} holds an unfinished bundle: remove it or pass --fresh with another WORK")
    checkpoint = build_random_checkpoint(work / f"{size}-checkpoint", size)
    policy, config = load_checkpoint(checkpoint)
    export_policy(policy, config, bundle, str(checkpoint), checkpoint_sha256(checkpoint))
    del policy
    spec = read_manifest(bundle).runtime
    quantize_bundle(bundle, "int8", synthetic_samples(spec, bundle, calibration, CALIBRATION_SEED))
    held_out = synthetic_samples(spec, bundle, verify_count, HELD_OUT_SEED)
    verify_bundle(bundle, held_out, checkpoint, ["fp32"], source=f"{verify_count} synthetic observations")
    return bundle


def build_engines(bundle: Path) -> None:
    from tools.build_trt import main as build_trt

    build_trt(argparse.Namespace(bundle=bundle, precision=list(PRECISIONS), workspace_gb=4.0))


def verify_engines(bundle: Path) -> dict:
    from tools.verify import verify_bundle

    manifest = verify_bundle(bundle, None, variants=[f"trt-{p}" for p in PRECISIONS])
    return {name: manifest.variants[name].verification | {"status": manifest.variants[name].status}
            for name in (f"trt-{p}" for p in PRECISIONS)}  # fmt: skip


def time_engine(bundle: Path, precision: str, repeats: int) -> dict:
    """Median ms per chunk through the engine (copies included) and as one CUDA graph of the device work."""
    from policy_runtime.bundle import read_manifest
    from policy_runtime.engines.tensorrt_engine import TensorRTEngine, _check
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples

    engine = TensorRTEngine(bundle, precision=precision, force_unverified=True)
    sample = synthetic_samples(read_manifest(bundle).runtime, bundle, 1, HELD_OUT_SEED)[0]
    rt, stream = engine._cudart, engine._stream

    def chunk() -> None:
        engine.head(engine.condition(sample.backbone_feed()), sample.proprio, sample.noise)

    times = []
    for i in range(repeats + 10):  # the first 10 warm up
        t0 = time.perf_counter()
        chunk()
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1e3)
    backbone, head = engine.graphs["backbone"], engine.graphs["head"]
    d2d = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    nbytes = int(np.prod(head.engine.get_tensor_shape("bridge"))) * 4

    def device_work() -> None:
        if not backbone.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        _check(rt.cudaMemcpyAsync(head.device["bridge"], backbone.device["bridge"], nbytes, d2d, stream))
        if not head.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    device_work()  # inputs are on the device from the chunks above
    _check(rt.cudaStreamSynchronize(stream))
    _check(rt.cudaStreamBeginCapture(stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
    device_work()
    graph = _check(rt.cudaStreamEndCapture(stream))
    graph_exec = _check(rt.cudaGraphInstantiate(graph, 0))
    start, end = _check(rt.cudaEventCreate()), _check(rt.cudaEventCreate())

    def device_ms(run) -> float:
        samples = []
        for _ in range(repeats):
            _check(rt.cudaEventRecord(start, stream))
            run()
            _check(rt.cudaEventRecord(end, stream))
            _check(rt.cudaEventSynchronize(end))
            samples.append(_check(rt.cudaEventElapsedTime(start, end)))
        return float(np.median(samples))

    plain = device_ms(device_work)
    graphed = device_ms(lambda: _check(rt.cudaGraphLaunch(graph_exec, stream)))
    for release in (rt.cudaGraphExecDestroy(graph_exec), rt.cudaGraphDestroy(graph)):
        _check(release)
    engine.close()
    return {"engine_call_ms": float(np.median(times)), "engine_call_p90_ms": float(np.percentile(times, 90)),
            "device_ms": plain, "cuda_graph_ms": graphed}  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    steps: dict[str, float] = {}
    t0 = time.monotonic()
    if not args.prepare_only:
        from policy_runtime.engines.tensorrt_engine import import_tensorrt

        trt, _ = import_tensorrt()  # one line and exit 2 without TensorRT or a GPU, before anything is built
        print(f"TensorRT {trt.__version__}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = prepare_bundle(args.work, args.size, args.calibration, args.verify_count, args.fresh)
    steps["bundle_s"] = time.monotonic() - t0
    result: dict = {"bundle": str(bundle), "size": args.size, "steps": steps}
    if args.prepare_only:
        return result
    t = time.monotonic()
    build_engines(bundle)
    steps["build_s"] = time.monotonic() - t
    t = time.monotonic()
    result["verification"] = verify_engines(bundle)
    steps["verify_s"] = time.monotonic() - t
    t = time.monotonic()
    result["timing"] = {f"trt-{p}": time_engine(bundle, p, args.repeats) for p in PRECISIONS}
    steps["time_s"] = time.monotonic() - t
    steps["total_s"] = time.monotonic() - t0
    return result


def print_result(result: dict) -> None:
    print(f"\n{result['size']} bundle {result['bundle']}; steps (s): "
          + ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in result["steps"].items()))  # fmt: skip
    if "timing" not in result:
        return
    print(f"{'engine':<10}{'call ms':>9}{'p90':>8}{'device ms':>11}{'CUDA graph':>12}{'chunk cos':>11}"
          f"{'anchor agr':>12}  gates")  # fmt: skip
    for name, row in result["timing"].items():
        v = result["verification"][name]
        print(f"{name:<10}{row['engine_call_ms']:>9.2f}{row['engine_call_p90_ms']:>8.2f}{row['device_ms']:>11.2f}"
              f"{row['cuda_graph_ms']:>12.2f}{v.get('chunk_cosine', float('nan')):>11.5f}"
              f"{v.get('anchor_agreement', float('nan')):>12.3f}  {v['status']}")  # fmt: skip
    fp16 = result["timing"]["trt-fp16"]
    best = min(fp16["cuda_graph_ms"], fp16["engine_call_ms"])
    passed = result["verification"]["trt-fp16"]["status"] == "passed"
    print(f"TensorRT FP16 chunk <= {GOAL_MS} ms at its gates: {'yes' if passed and best <= GOAL_MS else 'NO'} "
          f"({best:.2f} ms)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_result(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
