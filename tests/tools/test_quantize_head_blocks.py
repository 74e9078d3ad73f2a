"""`quantize --precision int8 --quantize-head blocks`: the head's DiT blocks run in INT8 while the scoring MLP,
the action in/out projections and the bridge projection stay FP32; the variant passes the gates."""

from __future__ import annotations

import onnx

from anchorvla.cli import main as cli_main
from policy_runtime.bundle import read_manifest
from tests.bundle_helpers import HELD_OUT_COUNT, bundle_copy, tiny_bundle
from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
from tools.verify import verify_bundle


def test_only_the_dit_blocks_are_quantized_and_the_anchor_choice_holds(tmp_path):
    checkpoint, _ = tiny_bundle()
    bundle = bundle_copy(tmp_path)
    assert cli_main(["quantize", str(bundle), "--precision", "int8", "--quantize-head", "blocks"]) == 0
    manifest = read_manifest(bundle)
    assert manifest.graphs["head.int8.onnx"].method == "int8-dynamic, DiT blocks only"
    nodes = onnx.load(str(bundle / "head.int8.onnx")).graph.node
    integer = [n.name for n in nodes if n.op_type == "MatMulInteger"]
    float_matmuls = [n.name for n in nodes if n.op_type == "MatMul" and "score_mlp" in n.name]
    assert integer and all(name.startswith("/blocks.") for name in integer)
    assert float_matmuls  # the scoring stays FP32
    samples = synthetic_samples(manifest.runtime, bundle, HELD_OUT_COUNT, HELD_OUT_SEED)
    verification = verify_bundle(bundle, samples, checkpoint, ["int8"]).variants["int8"]
    assert verification.status == "passed", verification.verification
