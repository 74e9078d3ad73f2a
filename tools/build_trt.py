"""`anchorvla build-trt BUNDLE [--precision fp16 int8]`: TensorRT engines for the bundle, built on this device.

fp16: from the FP32 ONNX graphs with the FP16 builder flag. int8: from the static QDQ INT8 graphs (explicit
quantization: the Q/DQ nodes say what runs in INT8; FP16 allowed elsewhere). A timing cache in the bundle
(`trt.timing.cache`) makes rebuilds fast. Engines are tied to the device and TensorRT version they were built
with, so build on the target (the Jetson). Without TensorRT or a GPU: one line, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anchorvla.errors import UserError
from policy_runtime.bundle import GraphEntry, VariantEntry, read_manifest, sha256_file

TIMING_CACHE = "trt.timing.cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--precision", nargs="+", choices=["fp16", "int8"], default=["fp16"])
    parser.add_argument("--workspace-gb", type=float, default=2.0, help="builder workspace limit")


def build_engine(
    trt, onnx_path: Path, engine_path: Path, precision: str, cache_path: Path, workspace: int
) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # with Q/DQ in the graph: explicit quantization
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


def main(args: argparse.Namespace) -> int:
    from policy_runtime.engines.tensorrt_engine import import_tensorrt

    manifest = read_manifest(args.bundle)
    trt, _cudart = import_tensorrt()
    directory = Path(args.bundle)
    for precision in args.precision:
        source = manifest.variants.get("fp32" if precision == "fp16" else "int8")
        if precision == "int8" and (
            source is None or "static" not in manifest.graphs[source.graphs["backbone"]].method
        ):
            raise UserError("build-trt int8 needs the static QDQ INT8 variant: `anchorvla quantize BUNDLE "
                            "--precision int8 --episodes DIR` first (dynamic INT8 does not map to TensorRT)")  # fmt: skip
        graphs = {}
        for role, file in source.graphs.items():
            entry = manifest.graphs[file]
            engine_file = f"{role}.trt-{precision}.engine"
            print(f"building {engine_file} from {file} (TensorRT {trt.__version__})")
            build_engine(trt, directory / file, directory / engine_file, precision, directory / TIMING_CACHE,
                         int(args.workspace_gb * (1 << 30)))  # fmt: skip
            manifest.graphs[engine_file] = GraphEntry(
                role=role, precision=precision, format="tensorrt", file=engine_file,
                sha256=sha256_file(directory / engine_file), inputs=entry.inputs, outputs=entry.outputs,
                method=f"tensorrt {trt.__version__} {precision} from {file}",
            )  # fmt: skip
            graphs[role] = engine_file
        manifest.variants[f"trt-{precision}"] = VariantEntry(format="tensorrt", graphs=graphs)
        manifest.write(directory)
    print(
        f"added {', '.join('trt-' + p for p in args.precision)} (unverified); next: `anchorvla verify {directory}`"
    )
    return 0
