"""`anchorvla quantize` + `anchorvla verify`: FP16 (LayerNorm kept fp32), INT4 weight-only backbone, INT8 static
QDQ (calibrated) and dynamic (no-data fallback) variants pass the gates on held-out observations; a variant that
misses them is marked failed with its figures."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from anchorvla.cli import main as cli_main
from policy_runtime.bundle import ANCHOR_TIE_LOGITS, CHUNK_COS_GATE, read_manifest
from policy_runtime.engines.onnx_engine import OnnxEngine
from tests.bundle_helpers import HELD_OUT_COUNT, bundle_copy, tiny_bundle, write_demo_dataset
from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
from tools.onnx_files import graph_entry, save_graph
from tools.quantize import quantize_bundle
from tools.verify import same_anchor, verify_bundle


def _held_out(bundle):
    return synthetic_samples(read_manifest(bundle).runtime, bundle, HELD_OUT_COUNT, HELD_OUT_SEED)


def test_int8_without_episodes_says_so_and_falls_back_to_dynamic_quantization(tmp_path, capsys):
    bundle = bundle_copy(tmp_path)
    assert cli_main(["quantize", str(bundle), "--precision", "int8"]) == 0
    assert "no episodes given" in capsys.readouterr().out
    manifest = read_manifest(bundle)
    assert manifest.variants["int8"].status == "unverified"  # a new variant waits for verify
    assert manifest.graphs["backbone.int8.onnx"].method == "int8-dynamic"
    assert manifest.variants["int8"].graphs["head"] == "head.onnx"  # the head stays FP32 unless asked
    ops = {n.op_type for n in onnx.load(str(bundle / "backbone.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops


def test_static_qdq_int8_calibrated_on_episodes_is_symmetric_and_passes_the_gates_on_recorded_data(
    tmp_path, capsys
):
    checkpoint, _ = tiny_bundle()
    bundle = bundle_copy(tmp_path)
    episodes = write_demo_dataset(tmp_path / "calibration", seed=1)
    held_out = write_demo_dataset(tmp_path / "held_out", seed=2)
    args = [
        "quantize",
        str(bundle),
        "--precision",
        "int8",
        "--episodes",
        str(episodes),
        "--calibration-size",
        "4",
        "--quantize-head",
    ]
    assert cli_main(args) == 0
    assert f"4 recorded observations from {episodes}" in capsys.readouterr().out
    model = onnx.load(str(bundle / "head.int8.onnx"))
    assert read_manifest(bundle).graphs["head.int8.onnx"].method == "int8-static-qdq"
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quant and any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in quant if n.input[2] in inits]
    assert zero_points and all(
        z.dtype == np.int8 and not z.any() for z in zero_points
    )  # symmetric, for TensorRT
    assert (
        cli_main(["verify", str(bundle), "--data", str(held_out), "--variants", "int8", "--count", "12"]) == 0
    )
    assert f"12 recorded observations from {held_out}" in capsys.readouterr().out
    variant = read_manifest(bundle).variants["int8"]
    assert variant.status == "passed", variant.verification
    assert variant.verification["samples"] == 12
    assert (
        variant.verification["anchor_agreement"] >= 0.98
        and variant.verification["chunk_cosine"] >= CHUNK_COS_GATE
    )


def test_fp16_keeps_layernorm_in_fp32_int4_packs_the_backbone_matmuls_and_both_pass(tmp_path):
    checkpoint, _ = tiny_bundle()
    bundle = bundle_copy(tmp_path)
    quantize_bundle(bundle, "fp16")
    quantize_bundle(bundle, "int4")
    fp16 = onnx.load(str(bundle / "head.fp16.onnx"))
    types = {i.name: i.data_type for i in fp16.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types.values()
    norms = [n for n in fp16.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(
        types.get(i, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for n in norms for i in n.input[1:]
    )
    int4_ops = {n.op_type for n in onnx.load(str(bundle / "backbone.int4.onnx")).graph.node}
    assert "MatMulNBits" in int4_ops
    manifest = verify_bundle(bundle, _held_out(bundle), checkpoint, ["fp16", "int4"])
    assert manifest.variants["int4"].graphs["head"] == "head.onnx"  # weight-only INT4 is for the backbone
    for name in ("fp16", "int4"):
        assert manifest.variants[name].status == "passed", manifest.variants[name].verification
        assert manifest.variants[name].gates["backbone_cosine"] in (0.999, 0.99)
    assert OnnxEngine(bundle, precision="fp16").variant == "fp16"


def test_a_variant_that_misses_the_gates_is_marked_failed_with_its_figures(tmp_path):
    checkpoint, _ = tiny_bundle()
    bundle = bundle_copy(tmp_path)
    manifest = read_manifest(bundle)
    model = onnx.load(str(bundle / "backbone.onnx"))  # a "quantization" that wrecked the projector
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if "projector" in init.name:
            w = numpy_helper.to_array(init)
            init.CopyFrom(
                numpy_helper.from_array((w + rng.normal(0, 0.5, w.shape)).astype(w.dtype), init.name)
            )
    save_graph(model, bundle, "backbone.int4.onnx", manifest.source_checkpoint.sha256)
    manifest.graphs["backbone.int4.onnx"] = graph_entry(
        bundle, "backbone.int4.onnx", "backbone", "int4", "test", [], {}
    )
    manifest.variants["int4"] = manifest.variants["fp32"].model_copy(
        update={"graphs": {**manifest.variants["fp32"].graphs, "backbone": "backbone.int4.onnx"}}
    )
    manifest.write(bundle)
    manifest = verify_bundle(bundle, _held_out(bundle), checkpoint, ["int4"])
    variant = manifest.variants["int4"]
    assert variant.status == "failed"
    assert manifest.graphs["backbone.int4.onnx"].verification["cosine"] < variant.gates["backbone_cosine"]
    assert len(variant.verification["action_max_abs_si"]) == len(manifest.runtime.action_layout)


def test_anchor_agreement_counts_a_tied_runner_up_but_not_a_clear_loser():
    # The reference's scores: anchor 1 all but ties anchor 0, anchor 2 is clearly worse.
    scores = np.array([1.0, 1.0 - 0.9 * ANCHOR_TIE_LOGITS, 0.5])
    assert same_anchor(scores, 0) and same_anchor(scores, 1)
    assert not same_anchor(scores, 2)
    assert not same_anchor(np.array([1.0, 1.0 - 1.1 * ANCHOR_TIE_LOGITS]), 1)
