"""`anchorvla bench engines [BUNDLE] [--paper-size]`: per-chunk latency (backbone + head, one observation) and
peak memory of torch FP32, ONNX Runtime FP32 / INT8 (and the other variants in the bundle), and TensorRT where it
is present, side by side in one run, with each variant's verification figures beside its timing.

Each engine runs in a fresh subprocess, so its peak RSS (VmHWM, else ru_maxrss) is its own. torch and onnxruntime run at the
same intra-op thread count (`--threads`), pinned to `--cpus` when given (away from the fast loop's core). Beside
the wall-clock median each row has the median CPU time of the process per chunk: with one thread on a shared
machine it is the figure other processes' load disturbs least. A table per size splits each engine's chunk by
module (tools/engine_split.py). Without BUNDLE a demo-size random checkpoint is built, exported, INT8-quantized
(dynamic: there are no episodes) and INT4-quantized, and verified first; `--paper-size` does the same at the
paper's size (Qwen2.5-0.5B dimensions, 2 images at 224 px, 64 ActionQuery tokens, M=20, S_tr=10; random
weights; the backbone graph's weights go to an external data file): tens of minutes on one core. A bundle an
earlier run prepared and verified in `--work` is used again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPEEDUP_GOALS = {"demo": 1.5, "paper": 3.0}  # ORT INT8 vs torch FP32, median per chunk (issue 24)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bundle", type=Path, nargs="?", default=None, help="bundle (default: build a demo-size one)"
    )
    parser.add_argument("--paper-size", action="store_true", help="also measure a random paper-size model")
    parser.add_argument(
        "--threads", type=int, default=2, help="intra-op threads, the same for torch and onnxruntime"
    )
    parser.add_argument(
        "--cpus", type=_cpu_list, default=None,
        help="run each engine pinned to these CPUs (e.g. 1 or 1,2: away from the fast loop's core)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20, help="timed chunks per engine (demo size)")
    parser.add_argument("--paper-repeats", type=int, default=5, help="timed chunks per engine (paper size)")
    parser.add_argument(
        "--instruction-cache", action="store_true",
        help="also time the torch backbone with token_order instruction_first, without and with the instruction's "
        "KV cached",
    )  # fmt: skip
    parser.add_argument(
        "--verify-count", type=int, default=50, help="held-out observations for a built bundle"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="where built checkpoints/bundles go (default: temp)"
    )


def _cpu_list(text: str) -> list[int]:
    try:
        cpus = sorted({int(c) for c in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: CPU numbers separated by commas, e.g. 1 or 1,2"
        ) from None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if not set(cpus) <= allowed:
        raise argparse.ArgumentTypeError(f"{text}: this process may run on CPUs {sorted(allowed)} only")
    return cpus


def prepare(size: str, work: Path, verify_count: int) -> Path:
    """Random checkpoint -> bundle with fp32, dynamic int8 and int4 variants, verified. Returns the bundle; one
    that an earlier run left verified in `work` is used again."""
    from policy_runtime.bundle import checkpoint_sha256
    from policy_runtime.model.checkpoint import load_checkpoint
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
    from tools.demo_checkpoint import build_random_checkpoint
    from tools.export import export_policy
    from tools.quantize import quantize_bundle
    from tools.verify import verify_bundle

    t0 = time.monotonic()
    bundle = work / f"{size}-bundle"
    if _prepared(bundle):
        print(f"[{size}] using the bundle an earlier run prepared in {bundle}", flush=True)
        return bundle
    checkpoint = build_random_checkpoint(work / f"{size}-checkpoint", size)
    policy, config = load_checkpoint(checkpoint)
    print(f"[{size}] exporting (random weights, built in code)", flush=True)
    export_policy(policy, config, bundle, str(checkpoint), checkpoint_sha256(checkpoint))
    del policy
    print(f"[{size}] quantizing to INT8 (no episodes: dynamic INT8; the head's DiT blocks too)", flush=True)
    quantize_bundle(bundle, "int8", quantize_head="blocks")
    print(f"[{size}] quantizing to INT4 (weight-only MatMulNBits)", flush=True)
    manifest = quantize_bundle(bundle, "int4")
    print(f"[{size}] verifying on {verify_count} synthetic held-out observations", flush=True)
    samples = synthetic_samples(manifest.runtime, bundle, verify_count, HELD_OUT_SEED)
    verify_bundle(bundle, samples, checkpoint)
    print(f"[{size}] bundle ready in {time.monotonic() - t0:.0f} s", flush=True)
    return bundle


def _prepared(bundle: Path) -> bool:
    from policy_runtime.bundle import read_manifest

    if not (bundle / "manifest.json").is_file():
        return False
    variants = read_manifest(bundle).variants
    return all(n in variants and variants[n].status != "unverified" for n in ("fp32", "int8", "int4"))


def _engines(manifest) -> list[str]:
    kinds = ["torch-fp32"] + [f"ort-{n}" for n, v in manifest.variants.items() if v.format == "onnx"]
    try:
        from policy_runtime.engines.tensorrt_engine import import_tensorrt

        import_tensorrt()
        kinds += [n for n, v in manifest.variants.items() if v.format == "tensorrt"]
    except Exception as exc:  # no TensorRT / GPU here: say so in the table's notes
        print(f"TensorRT: not measured ({str(exc).splitlines()[0]})")
    return kinds


def measure(kind: str, bundle: Path, threads: int, repeats: int, cpus: list[int] | None = None) -> dict:
    """Run one engine in a fresh process (pinned to `cpus` when given); returns its latencies, per-module split
    and peak RSS."""
    options = {"kind": kind, "bundle": str(bundle), "threads": threads, "repeats": repeats, "cpus": cpus}
    cmd = [sys.executable, "-m", "tools.bench_engines", "worker", json.dumps(options)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM where Linux has it: ru_maxrss of a child started by fork+exec keeps the
    parent's peak from before the exec, which would make every engine look as big as the parent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _torch_parts(bundle: Path, manifest, sample, threads: int, rng):
    """(backbone, head, residual call, module timer) closures over the checkpoint the bundle was made from."""
    import torch

    from policy_runtime.model.checkpoint import load_checkpoint
    from tools.engine_split import TorchModuleTimer

    torch.set_num_threads(threads)
    policy, _config = load_checkpoint(Path(manifest.source_checkpoint.path))
    t = torch.from_numpy
    images = (
        () if sample.images is None else (t(sample.images), t(sample.input_ids), t(sample.attention_mask))
    )
    delta = None if sample.proprio_delta is None else t(sample.proprio_delta)
    proprio = t(sample.proprio)
    modules = {"once": policy.head.cond_in}
    if policy.backbone is not None and hasattr(policy.backbone, "vision"):
        modules.update(
            vision=policy.backbone.vision, projector=policy.backbone.projector, llm=policy.backbone.llm
        )
    timer = TorchModuleTimer(modules)
    state: dict = {}

    @torch.inference_mode()
    def backbone() -> None:
        state["cond"] = policy.condition(proprio, *images, proprio_delta=delta)

    @torch.inference_mode()
    def head() -> None:
        noise = t(rng.standard_normal(sample.noise.shape).astype(np.float32))
        state["context"] = policy.head.sample(state["cond"], proprio, noise)[4]

    @torch.inference_mode()
    def residual() -> None:
        planned = torch.zeros(1, policy.head.config.action_dim)
        policy.residual(proprio, state["context"], planned, torch.tensor([1]))

    return backbone, head, residual, timer


def _bundle_parts(kind: str, bundle: Path, sample, threads: int, rng):
    if kind.startswith("ort-"):
        from policy_runtime.engines.onnx_engine import OnnxEngine

        engine = OnnxEngine(bundle, kind.removeprefix("ort-"), threads, "cpu", force_unverified=True)
    else:
        from policy_runtime.engines.tensorrt_engine import TensorRTEngine

        engine = TensorRTEngine(bundle, kind.removeprefix("trt-"), force_unverified=True)
    state: dict = {"feeds": {}}
    run = engine._run

    def recording_run(role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        state["feeds"][role] = feed  # what the profiler replays: exactly the engine's feed
        return run(role, feed)

    engine._run = recording_run

    def backbone() -> None:
        state["bridge"] = engine.condition(sample.backbone_feed())

    def head() -> None:
        noise = rng.standard_normal(sample.noise.shape).astype(np.float32)
        state["context"] = engine.head(state["bridge"], sample.proprio, noise)[3]

    def residual() -> None:
        planned = np.zeros((1, len(engine.channels)), np.float32)
        engine.residual_normalized(sample.proprio, state["context"], planned, 1)

    return backbone, head, residual, engine, state


def _runs(ms: float) -> int:
    """Profiled runs for a graph taking `ms`: about 2 s of them (a few ms per run are noise on a busy core)."""
    return max(3, min(50, int(2000 / max(ms, 1e-3))))


def _ort_split(engine, state: dict, threads: int, backbone_ms: float, head_ms: float) -> dict[str, float]:
    """Shares of the backbone's node time by module and of the head's spent in the denoising loop."""
    from tools.engine_split import head_part, module_of, profile_node_times, shares

    feeds, paths = state["feeds"], engine.graph_paths
    backbone = profile_node_times(paths["backbone"], feeds["backbone"], threads, _runs(backbone_ms))
    head = profile_node_times(paths["head"], feeds["head"], threads, _runs(head_ms))
    return {**{f"backbone_{k}": v for k, v in shares(backbone, module_of).items()},
            "head_denoise": shares(head, head_part).get("denoise", 0.0)}  # fmt: skip


def _worker(kind: str, bundle: Path, threads: int, repeats: int, cpus: list[int] | None) -> dict:
    """Times `repeats` chunks (backbone then head, each timed) after a warm-up, then the residual per call."""
    from policy_runtime.bundle import read_manifest
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
    from tools.engine_split import pin

    pin(cpus)
    manifest = read_manifest(bundle)
    sample = synthetic_samples(manifest.runtime, bundle, 1, HELD_OUT_SEED)[0]
    if kind == "torch-instruction-cache":
        from tools.bench_instruction_cache import time_instruction_cache

        return time_instruction_cache(Path(manifest.source_checkpoint.path), sample, threads, repeats)
    rng = np.random.default_rng(0)
    timer = engine = None
    if kind == "torch-fp32":
        backbone, head, residual, timer = _torch_parts(bundle, manifest, sample, threads, rng)
    else:
        backbone, head, residual, engine, state = _bundle_parts(kind, bundle, sample, threads, rng)
    backbone(), head(), residual()  # warm-up
    parts: dict[str, list[float]] = {"chunk": [], "backbone": [], "head": []}
    cpu = []
    for _ in range(repeats):
        if timer is not None:
            timer.take()
        c0, t0 = time.process_time(), time.perf_counter()
        backbone()
        t1 = time.perf_counter()
        head()
        t2, c2 = time.perf_counter(), time.process_time()
        cpu.append((c2 - c0) * 1e3)
        parts["chunk"].append((t2 - t0) * 1e3)
        parts["backbone"].append((t1 - t0) * 1e3)
        parts["head"].append((t2 - t1) * 1e3)
        for name, ms in (timer.take() if timer is not None else {}).items():
            parts.setdefault(name, []).append(ms)
    calls = []
    for _ in range(max(repeats, 20)):
        t0 = time.perf_counter()
        residual()
        calls.append((time.perf_counter() - t0) * 1e3)
    peak_mb = _peak_rss_mb()  # before the profiler's own sessions
    times = parts["chunk"]
    split = {name: float(np.median(v)) for name, v in parts.items() if name != "chunk"}
    if timer is not None:  # torch: the hooks time the towers and the head's once-per-chunk projection
        split["vision"] = split.pop("vision", 0.0) + split.pop("projector", 0.0)
        split["other"] = split["backbone"] - split["vision"] - split.get("llm", 0.0)
        split["head_denoise"] = split["head"] - split.pop("once", 0.0)
    elif kind.startswith("ort-"):
        fractions = _ort_split(engine, state, threads, split["backbone"], split["head"])
        for module in ("vision", "llm", "other"):
            split[module] = split["backbone"] * fractions.get(f"backbone_{module}", 0.0)
        split["head_denoise"] = split["head"] * fractions["head_denoise"]
    split["residual_call"] = float(np.median(calls))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(np.min(times)), "cpu_median_ms": float(np.median(cpu)), "repeats": repeats, "peak_rss_mb": peak_mb, "split_ms": split,
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}  # fmt: skip


def bench_bundle(
    size: str, bundle: Path, threads: int, repeats: int, cpus: list[int] | None = None, cache: bool = False
) -> dict:
    from policy_runtime.bundle import read_manifest

    manifest = read_manifest(bundle)
    rows = []
    for kind in _engines(manifest):
        where = f", cpus {','.join(map(str, cpus))}" if cpus else ""
        print(f"[{size}] timing {kind} ({repeats} chunks, {threads} threads{where})", flush=True)
        row = {"engine": kind, **measure(kind, bundle, threads, repeats, cpus)}
        variant = manifest.variants.get(kind.removeprefix("ort-")) if kind != "torch-fp32" else None
        if variant is not None:
            row["status"] = variant.status
            row["chunk_cosine"] = variant.verification.get("chunk_cosine")
            row["anchor_agreement"] = variant.verification.get("anchor_agreement")
            row["backbone_cosine"] = manifest.graphs[variant.graphs["backbone"]].verification.get("cosine")
        rows.append(row)
    torch_row = next((r for r in rows if r["engine"] == "torch-fp32" and "error" not in r), None)
    for r in rows:
        if torch_row and r.get("median_ms"):
            r["speedup_vs_torch"] = torch_row["median_ms"] / r["median_ms"]
            r["cpu_speedup_vs_torch"] = torch_row["cpu_median_ms"] / r["cpu_median_ms"]
    result = {"size": size, "bundle": str(bundle), "threads": threads, "cpus": cpus, "rows": rows}
    if cache:
        print(f"[{size}] timing the instruction KV cache (torch, {repeats} chunks)", flush=True)
        result["instruction_cache"] = measure("torch-instruction-cache", bundle, threads, repeats, cpus)
    return result


def _fig(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if row.get(key) is not None else "ref"


def print_table(result: dict) -> None:
    pinned = f", pinned to cpus {result['cpus']}" if result.get("cpus") else ""
    print(f"\n{result['size']} ({result['threads']} threads{pinned}), bundle {result['bundle']}")
    header = (f"{'engine':<12}{'median ms':>11}{'p90 ms':>10}{'speedup':>9}{'CPU ms':>9}{'speedup':>9}{'peak MB':>9}"
              f"{'backbone cos':>14}{'chunk cos':>11}{'anchor agr':>12}  gates")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['engine']:<12} failed: {r['error']}")
            continue
        print(f"{r['engine']:<12}{r['median_ms']:>11.1f}{r['p90_ms']:>10.1f}{r.get('speedup_vs_torch', 0):>8.2f}x"
              f"{r['cpu_median_ms']:>9.1f}{r.get('cpu_speedup_vs_torch', 0):>8.2f}x{r['peak_rss_mb']:>9.0f}{_fig(r, 'backbone_cosine', '.6f'):>14}{_fig(r, 'chunk_cosine', '.5f'):>11}"
              f"{_fig(r, 'anchor_agreement', '.3f'):>12}  {r.get('status', 'reference')}")  # fmt: skip
    print_split(result)
    if "instruction_cache" in result:
        from tools.bench_instruction_cache import print_instruction_cache

        print_instruction_cache(result["size"], result["instruction_cache"])


SPLIT_COLUMNS = (("vision", "vision"), ("llm", "LLM"), ("other", "bb other"), ("backbone", "backbone"),
                 ("head", "head"), ("head_denoise", "denoise"), ("residual_call", "resid/call"))  # fmt: skip


def print_split(result: dict) -> None:
    """Per-module medians (ms): vision tower + projector, LLM, the rest of the backbone graph, the backbone, the
    head and its K x steps denoising loop (per chunk), the residual (per fast-loop tick)."""
    rows = [r for r in result["rows"] if "split_ms" in r]
    if not rows:
        return
    print(f"\nper module, median ms ({', '.join(label for _, label in SPLIT_COLUMNS)}); denoise % of chunk")
    print(f"{'engine':<12}" + "".join(f"{label:>11}" for _, label in SPLIT_COLUMNS) + f"{'denoise %':>11}")
    for r in rows:
        split = r["split_ms"]
        cells = "".join(f"{split[key]:>11.2f}" if key in split else f"{'-':>11}" for key, _ in SPLIT_COLUMNS)
        share = 100 * split.get("head_denoise", 0.0) / r["median_ms"]
        print(f"{r['engine']:<12}{cells}{share:>10.1f}%")


def _ok(result: dict) -> bool:
    """ORT INT8 passed its gates and its median chunk is SPEEDUP_GOALS[size] times faster than torch FP32's."""
    int8 = next((r for r in result["rows"] if r["engine"] == "ort-int8"), None)
    goal = SPEEDUP_GOALS.get(result["size"], SPEEDUP_GOALS["demo"])
    ok = bool(int8 and int8.get("status") == "passed" and int8.get("speedup_vs_torch", 0) >= goal)
    print(f"{result['size']}: ORT INT8 passes its gates and is >= {goal}x faster than torch FP32 (median): "
          f"{'yes' if ok else 'NO'}")  # fmt: skip
    return ok


def main(args: argparse.Namespace):
    work_dir = args.work or Path(tempfile.mkdtemp(prefix="anchorvla-bench-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or prepare("demo", work_dir, args.verify_count)
    label = "demo" if args.bundle is None else args.bundle.name
    cache = args.instruction_cache
    results = [bench_bundle(label, bundle, args.threads, args.repeats, args.cpus, cache)]
    if args.paper_size:
        paper = prepare("paper", work_dir, min(args.verify_count, 10))
        results.append(bench_bundle("paper", paper, args.threads, args.paper_repeats, args.cpus, cache))
    for result in results:
        print_table(result)
    print()
    ok = all([_ok(r) for r in results])
    return {"results": results, "speedup_goals": SPEEDUP_GOALS}, ok


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "worker":
    _options = json.loads(sys.argv[2])
    print(json.dumps(_worker(_options["kind"], Path(_options["bundle"]), _options["threads"], _options["repeats"],
                             _options["cpus"])))  # fmt: skip
