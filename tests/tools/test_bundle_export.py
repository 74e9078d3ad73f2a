"""`anchorvla export`: three ONNX graphs (the head holds the whole denoising loop and the scoring), checked
against torch as they are written, and a manifest with everything the runtime needs."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx

from policy_runtime.bundle import CHECKPOINT_KEY, checkpoint_sha256, read_manifest, sha256_file
from tests.bundle_helpers import TEST_INFERENCE_STEPS, tiny_bundle
from tools.demo_checkpoint import ACTION_LAYOUT, PROPRIO_LAYOUT


def test_manifest_lists_three_graphs_with_hashes_io_and_the_export_check_figures():
    checkpoint, bundle = tiny_bundle()
    manifest = read_manifest(bundle)
    assert manifest.source_checkpoint.sha256 == checkpoint_sha256(checkpoint)
    fp32 = manifest.variants["fp32"].graphs
    assert fp32 == {"backbone": "backbone.onnx", "head": "head.onnx", "residual": "residual.onnx"}
    for role, file in fp32.items():
        entry = manifest.graphs[file]
        assert entry.role == role and entry.precision == "fp32"
        assert entry.sha256 == sha256_file(bundle / file)
        assert entry.verification["export_check_cosine"] >= 0.9999
        model = onnx.load(str(bundle / file))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert {p.key: p.value for p in model.metadata_props}[
            CHECKPOINT_KEY
        ] == manifest.source_checkpoint.sha256
    head = manifest.graphs["head.onnx"]
    # The real-time chunking prefix follows the noise (issue 23), and the manifest says the head takes it.
    assert [i.name for i in head.inputs] == [
        "bridge", "proprio", "noise", "prefix", "prefix_length", "prefix_score_weight"
    ]  # fmt: skip
    assert head.inputs[3].shape == [1, 8, len(ACTION_LAYOUT)] and manifest.runtime.prefix_conditioning
    assert [o.name for o in head.outputs] == ["chunk", "anchor_index", "scores", "context"]
    assert head.inputs[2].shape == [
        1,
        8,
        8,
        len(ACTION_LAYOUT),
    ]  # (B, M anchors, H, d): all anchors in one call
    assert head.verification["export_check_anchor_match"] is True


def test_the_head_graph_unrolls_every_denoising_step_and_scores_in_one_graph():
    _checkpoint, bundle = tiny_bundle()
    model = onnx.load(str(bundle / "head.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # Each denoiser evaluation ends in the final LayerNorm; the loop runs every step, then one ArgMax picks.
    blocks_per_step = 2 * 3 + 1  # two DiT blocks with three norms each, and the final norm
    assert (
        ops.count("LayerNormalization") == TEST_INFERENCE_STEPS * blocks_per_step + 1
    )  # + the condition's norm
    assert ops.count("ArgMax") == 1


def test_runtime_section_carries_layouts_normalization_preprocessing_and_tokenizer():
    _checkpoint, bundle = tiny_bundle()
    spec = json.loads((bundle / "manifest.json").read_text())["runtime"]
    assert spec["action_layout"] == ACTION_LAYOUT and spec["proprio_layout"] == PROPRIO_LAYOUT
    assert spec["cameras"] == ["third_person", "wrist"]
    assert spec["image"] == {
        "size": 32,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "num_images": 2,
        "anchor_image": False,
    }
    assert spec["gripper"] is None  # no gripper head (AnchorRefine) in this checkpoint
    assert spec["tokenizer"]["kind"] == "bytes" and spec["tokenizer"]["length"] == 24
    assert len(spec["action_low"]) == len(spec["action_high"]) == len(ACTION_LAYOUT)


def test_export_into_a_non_empty_directory_fails_with_one_line(tmp_path):
    checkpoint, _bundle = tiny_bundle()
    (tmp_path / "something").write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "anchorvla.cli", "export", str(checkpoint), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not empty" in proc.stderr
