"""The runtime refuses, with one clear line, a tampered or missing file, a bundle (or a graph) made from another
checkpoint, and a variant that failed or never ran its gates unless forced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import onnx
import pytest

from policy_runtime.bundle import CHECKPOINT_KEY, BundleError, read_manifest, sha256_file
from policy_runtime.engines.onnx_engine import OnnxEngine
from tests.bundle_helpers import bundle_copy, tiny_bundle
from tools.demo_checkpoint import build_random_checkpoint
from tools.verify import verify_bundle


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_tampered_graph_is_refused_before_it_is_loaded(tmp_path):
    bundle = bundle_copy(tmp_path)
    data = bytearray((bundle / "backbone.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "backbone.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError) as exc:
        OnnxEngine(bundle, precision="int8")
    assert "backbone.int8.onnx" in _one_line(exc) and "sha256" in str(exc.value)
    OnnxEngine(bundle, precision="fp32")  # the variant that does not use the file still loads


def test_a_missing_graph_is_refused(tmp_path):
    bundle = bundle_copy(tmp_path)
    (bundle / "residual.onnx").unlink()
    with pytest.raises(BundleError, match="residual.onnx is missing") as exc:
        OnnxEngine(bundle)
    _one_line(exc)


def test_a_graph_from_another_checkpoint_is_refused_even_with_a_fixed_up_manifest(tmp_path):
    bundle = bundle_copy(tmp_path)
    model = onnx.load(str(bundle / "head.onnx"))
    for prop in model.metadata_props:
        if prop.key == CHECKPOINT_KEY:
            prop.value = "0" * 64
    onnx.save_model(model, str(bundle / "head.onnx"))
    manifest = read_manifest(bundle)
    manifest.graphs["head.onnx"].sha256 = sha256_file(bundle / "head.onnx")
    manifest.write(bundle)
    with pytest.raises(BundleError, match="another checkpoint") as exc:
        OnnxEngine(bundle, precision="fp32")
    _one_line(exc)


def test_a_bundle_is_refused_for_another_checkpoint(tmp_path):
    _checkpoint, bundle = tiny_bundle()
    with pytest.raises(BundleError, match="another checkpoint"):
        OnnxEngine(bundle, expected_checkpoint_sha256="f" * 64)
    other = build_random_checkpoint(tmp_path / "other", "demo", seed=1)
    with pytest.raises(BundleError, match="another checkpoint") as exc:
        verify_bundle(bundle, [], other)
    _one_line(exc)


def test_unverified_and_failed_variants_are_refused_unless_forced(tmp_path):
    bundle = bundle_copy(tmp_path)
    manifest = read_manifest(bundle)
    manifest.variants["int8"].status = "unverified"
    manifest.write(bundle)
    with pytest.raises(BundleError, match="has not been verified"):
        OnnxEngine(bundle, precision="int8")
    manifest.variants["int8"].status = "failed"
    manifest.write(bundle)
    with pytest.raises(BundleError, match="failed its accuracy gates") as exc:
        OnnxEngine(bundle, precision="int8")
    assert "force_unverified" in _one_line(exc)
    assert OnnxEngine(bundle, precision="int8", force_unverified=True).variant == "int8"
    assert OnnxEngine(bundle).variant == "fp32"  # auto skips the failed variant


def test_anchorvla_run_with_a_tampered_bundle_exits_2_with_one_line(tmp_path):
    bundle = bundle_copy(tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["graphs"]["backbone.int8.onnx"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    config = tmp_path / "run.yaml"
    config.write_text(
        textwrap.dedent(f"""
        policy: {{engine: onnxruntime, bundle: {bundle}, precision: int8}}
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "anchorvla.cli", "run", "--config", str(config), "--duration", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "backbone.int8.onnx does not match its sha256" in proc.stderr
