"""`anchorvla quantize BUNDLE --precision {fp16,int8,int4}`: adds a variant to the bundle from its FP32 graphs.

- int8: ONNX Runtime static QDQ quantization (symmetric int8 activations and per-channel weights, so TensorRT
  takes the explicit Q/DQ graph as is) of the backbone, calibrated on observations; without calibration data it
  says so and falls back to dynamic INT8 (quantize_dynamic), the no-data fallback. The head stays FP32 unless
  `--quantize-head`: all of it in INT8 flipped the chosen anchor on 1 observation in 10 (dynamic INT8, random
  weights), failing the 0.98 gate; `--quantize-head blocks` keeps the scoring MLP, the action in/out projections
  and the bridge projection FP32 and quantizes the DiT blocks' MatMuls only: paper-width head, 1 thread, 209 ->
  126 ms CPU, anchor agreement 1.0 and chunk cosine 0.99995 on 20 synthetic observations (random weights).
- fp16: backbone and head converted with onnxruntime.transformers' float16 converter, LayerNormalization kept fp32,
  inputs/outputs kept fp32.
- int4: 4-bit block-wise weight-only quantization of the backbone's MatMuls (MatMulNBits, int8 compute); the head
  stays fp32.

Before int8 and int4, LoRA adapters are merged into their base weights (tools/onnx_lora.py). What a one-off
script (not in the repo; `anchorvla bench engines --paper-size` compares the whole graphs) measured on this CPU
for a slice of the backbone (paper widths, 2 vision + 4 LLM layers, 1 thread, CPU ms per call, cosine to FP32):
FP32 727; dynamic INT8 (QOperator: MatMulInteger, per-channel) 271 without / 264 with the LoRA merge, cosine
0.9985; static QDQ INT8 (symmetric s8s8, 8 synthetic calibration observations) 635, cosine 0.797, so dynamic
INT8 is the CPU variant and QDQ the TensorRT one; onnxruntime.transformers' optimizer (bert fusions: FastGelu,
SkipLayerNormalization, SkipSimplifiedLayerNormalization; its Attention fusion does not match these graphs)
before dynamic INT8: 276, no gain over onnxruntime's own fusions, so it is not used; INT4 634 (740 with fp32
compute), cosine 0.938 on random weights.

The residual (a small MLP on the fast loop) stays fp32 in every variant. The new variant is 'unverified' until
`anchorvla verify` runs its gates.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import Manifest, VariantEntry, read_manifest
from tools.bundle_samples import CALIBRATION_SEED, Sample, observation_samples, synthetic_samples
from tools.onnx_files import graph_entry, ort_session, save_graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory made by `anchorvla export`")
    parser.add_argument("--precision", required=True, choices=["fp16", "int8", "int4"])
    parser.add_argument("--episodes", type=Path, default=None, help="recorded episodes to calibrate INT8 on")
    parser.add_argument(
        "--calibrate-synthetic", action="store_true",
        help="INT8: calibrate static QDQ on synthetic observations from the layouts instead of episodes",
    )  # fmt: skip
    parser.add_argument("--calibration-size", type=int, default=32, help="observations for INT8 calibration")
    parser.add_argument("--block-size", type=int, default=32, help="INT4: weights per quantization block")
    parser.add_argument(
        "--quantize-head",
        nargs="?",
        const="all",
        default=None,
        choices=["blocks", "all"],
        help="INT8: quantize the head too: its DiT blocks only (blocks) or all of it (all, the default with no "
        "value); without the flag the head stays FP32",
    )


class _Reader:
    """onnxruntime CalibrationDataReader over prepared feeds, with a progress bar."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], what: str):
        from tqdm import tqdm

        self._it = iter(tqdm(feeds, desc=f"calibrating {what}", unit="obs", leave=False))

    def get_next(self):
        return next(self._it, None)


class _QuantizerLog(logging.Filter):
    """Keeps onnxruntime's quantizers quiet: their per-tensor and per-node INFO lines (thousands per graph at the
    paper size) and the hint to run its pre-processing are dropped; each node a quantizer starts advances `bar`."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("start to quantize ") and self.bar is not None:
            self.bar.update()
        return record.levelno > logging.INFO and "consider" not in message


@contextlib.contextmanager
def quiet_quantizer(bar=None):
    """onnxruntime's quantizers and converters log through the root logger and their module loggers
    (`onnxruntime.quantization.*`, `onnxruntime.transformers.*`); a logger's filters see only its own records, so
    the filter goes on each, and the module loggers are set to INFO while they run so their per-node records
    reach it (and the bar)."""
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (these create their loggers)
    import onnxruntime.transformers.float16  # noqa: F401

    prefixes = ("onnxruntime.quantization", "onnxruntime.transformers")
    names = [n for n in logging.Logger.manager.loggerDict if n in prefixes or n.startswith(prefixes)]
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in names)]
    levels = [lg.level for lg in loggers]
    log_filter = _QuantizerLog(bar)
    for lg in loggers:
        lg.addFilter(log_filter)
    for lg in loggers[1:]:
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeFilter(log_filter)
            lg.setLevel(level)


def _calibration_feeds(directory: Path, manifest: Manifest, samples: list[Sample]) -> dict[str, list[dict]]:
    """Backbone feeds from the samples; head feeds with the FP32 backbone's bridge features."""
    fp32 = manifest.variants["fp32"].graphs
    backbone = ort_session(directory / fp32["backbone"])
    head = manifest.graphs[fp32["head"]]
    head_feeds = []
    for s in samples:
        bridge = backbone.run(None, s.backbone_feed())[0]
        feed = {"bridge": bridge, "proprio": s.proprio, "noise": s.noise, **manifest.runtime.prefix_feed()}
        head_feeds.append(head.feed(feed))
    return {"backbone": [s.backbone_feed() for s in samples], "head": head_feeds}


def fold_constants(source: Path, target: Path) -> None:
    """ONNX Runtime's basic (hardware-independent) graph optimizations, written back as plain ONNX: constant
    folding of the exporter's shape arithmetic and removal of redundant nodes. The head's unrolled loop shrinks
    several-fold, which makes the quantizer's per-node passes (quadratic in the node count) fast."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", target.name + ".data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def gemm_to_matmul(model) -> None:
    """Rewrite Gemm(A, B, C) with a constant B as MatMul(A, B') + C, B' transposed once per weight.

    The head's unrolled denoising loop uses each Linear's weight in every step; onnxruntime's quantizer rewrites
    Gemm itself but assumes each weight has one user, and breaks the graph (duplicate names) when it has ten.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {w.name: w for w in graph.initializer}
    outputs = {o.name for o in graph.output}
    # torch's exporter shares equal weights through Identity nodes: read through them.
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}  # fmt: skip
    done: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        if node.output[0] in alias:
            continue
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        )
        if node.op_type != "Gemm" or not plain or node.input[1] not in weights:
            nodes.append(node)
            continue
        b = node.input[1]
        if b not in done:
            array = numpy_helper.to_array(weights[b])
            done[b] = f"{b}_for_matmul"
            graph.initializer.append(
                numpy_helper.from_array(array.T if attrs.get("transB", 0) else array, done[b])
            )
        has_bias = len(node.input) > 2 and node.input[2]
        product = node.output[0] + "_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node("MatMul", [node.input[0], done[b]], [product], name=node.name + "_matmul")
        )
        if has_bias:
            nodes.append(
                helper.make_node("Add", [product, node.input[2]], list(node.output), name=node.name + "_bias")
            )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [w for w in graph.initializer if w.name not in used]
    for w in unused:  # the original weights now only feed nothing
        graph.initializer.remove(w)


HEAD_BLOCKS = "/blocks."  # the DiT blocks' node names; scoring, in/out projections and cond_in are outside


def _int8(
    source: Path, target: Path, role: str, feeds: list[dict] | None, nodes: list[str] | None = None
) -> str:
    """`nodes`: the MatMuls to quantize (None: every one with a constant weight)."""
    from onnx import TensorProto
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if feeds is None:
        quantize_dynamic(
            source, target, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
            use_external_data_format=True, nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
        )  # fmt: skip
        return "int8-dynamic"
    quantize_static(
        source, target, _Reader(feeds, role), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True, nodes_to_quantize=nodes,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True},
    )  # fmt: skip
    return "int8-static-qdq"


def _fp16(source: Path, target: Path) -> str:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    block = [*DEFAULT_OP_BLOCK_LIST, "LayerNormalization"]
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save_model(converted, str(target), save_as_external_data=True, location=target.name + ".data")
    return "fp16 (LayerNormalization fp32)"


def _int4(source: Path, target: Path, block_size: int) -> str:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    # accuracy_level 4: int8 activations in the MatMulNBits kernel (paper width, 4 LLM layers, 1 thread:
    # 634 ms against 740 ms with fp32 activations).
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=True)
    return f"int4 weight-only MatMulNBits (block {block_size}, int8 compute)"


def _merged_lora(source: Path, tmp: Path) -> Path:
    """The graph with its LoRA adapters folded into the base weights (tools/onnx_lora.py), saved in `tmp`."""
    import onnx

    from tools.onnx_lora import merge_lora

    model = onnx.load(str(source))
    if not merge_lora(model):
        return source
    target = tmp / f"{source.stem}.merged.onnx"
    onnx.save_model(model, str(target), save_as_external_data=True, location=target.name + ".data")
    return target


def _steps(precision: str, graph: Path) -> int:
    """Progress-bar steps for one graph: int8 folds, rewrites, quantizes and saves; fp16 converts and saves; int4
    quantizes each MatMul (the bar moves per node) and saves."""
    if precision != "int4":
        return {"int8": 4, "fp16": 2}[precision]
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return sum(node.op_type == "MatMul" for node in model.graph.node) + 1


def quantize_bundle(
    directory: Path,
    precision: str,
    samples: list[Sample] | None = None,
    block_size: int = 32,
    quantize_head: bool | str = False,
) -> Manifest:
    """Add the `precision` variant to the bundle; `samples` calibrate INT8 statically (None: dynamic);
    `quantize_head`: INT8 for the head too, 'blocks' (its DiT blocks only) or True / 'all' (by default it stays
    FP32, see the module docstring)."""
    import onnx
    from tqdm import tqdm

    directory = Path(directory)
    manifest = read_manifest(directory)
    if "fp32" not in manifest.variants:
        raise UserError(f"{directory} has no fp32 variant to quantize from; re-export the bundle")
    fp32 = manifest.variants["fp32"].graphs
    roles = {"int8": ["backbone", "head"] if quantize_head else ["backbone"], "fp16": ["backbone", "head"],
             "int4": ["backbone"]}[precision]  # fmt: skip
    feeds = _calibration_feeds(directory, manifest, samples) if precision == "int8" and samples else None
    graphs = dict(fp32)
    for role in roles:
        source_entry = manifest.graphs[fp32[role]]
        file = f"{role}.{precision}.onnx"
        with (
            tempfile.TemporaryDirectory(dir=directory) as tmp,
            tqdm(total=_steps(precision, directory / source_entry.file), desc=f"{precision} {role}") as bar,
            quiet_quantizer(bar if precision == "int4" else None),
        ):
            target = Path(tmp) / file
            source = directory / source_entry.file
            if precision in ("int8", "int4"):
                bar.set_postfix_str("merging LoRA")
                source = _merged_lora(source, Path(tmp))
            if precision == "int8":
                bar.set_postfix_str("folding constants")
                folded = Path(tmp) / f"{role}.folded.onnx"
                fold_constants(source, folded)
                bar.update()
                model = onnx.load(str(folded))
                gemm_to_matmul(model)
                source = Path(tmp) / f"{role}.matmul.onnx"
                onnx.save_model(
                    model, str(source), save_as_external_data=True, location=source.name + ".data"
                )
                bar.update()
                bar.set_postfix_str("quantizing")
                nodes = None
                if role == "head" and quantize_head == "blocks":
                    nodes = [n.name for n in model.graph.node if n.name.startswith(HEAD_BLOCKS)]
                method = _int8(source, target, role, feeds and feeds[role], nodes)
                method += ", DiT blocks only" if nodes is not None else ""
                bar.update()
            elif precision == "fp16":
                bar.set_postfix_str("converting")
                method = _fp16(directory / source_entry.file, target)
                bar.update()
            else:
                bar.set_postfix_str("quantizing MatMuls")
                method = _int4(source, target, block_size)
            bar.set_postfix_str("saving")
            external = save_graph(onnx.load(str(target)), directory, file, manifest.source_checkpoint.sha256)
            bar.update(bar.total - bar.n)
            bar.set_postfix_str("done")
        manifest.graphs[file] = graph_entry(directory, file, role, precision, method, external, {})
        graphs[role] = file
    manifest.variants[precision] = VariantEntry(graphs=graphs)
    manifest.write(directory)
    return manifest


def main(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.bundle)
    samples = None
    if args.precision == "int8":
        if args.episodes is not None:
            samples, where = observation_samples(
                manifest.runtime, args.bundle, args.episodes, args.calibration_size, CALIBRATION_SEED
            )
        elif args.calibrate_synthetic:
            samples = synthetic_samples(
                manifest.runtime, args.bundle, args.calibration_size, CALIBRATION_SEED
            )
            where = f"{args.calibration_size} synthetic observations from the layouts (no recorded episodes)"
        else:
            where = "no episodes given (--episodes): falling back to dynamic INT8 (quantize_dynamic), no calibration"
        print(f"INT8 calibration: {where}")
    elif args.episodes is not None or args.calibrate_synthetic:
        print(f"note: {args.precision} needs no calibration data; --episodes/--calibrate-synthetic ignored")
    head = args.quantize_head or False
    manifest = quantize_bundle(args.bundle, args.precision, samples, args.block_size, head)
    variant = manifest.variants[args.precision]
    for role, file in variant.graphs.items():
        entry = manifest.graphs[file]
        print(f"  {role:<9} {file:<22} {entry.method}")
    print(f"added variant '{args.precision}' (unverified); next: `anchorvla verify {args.bundle}`")
    return 0
