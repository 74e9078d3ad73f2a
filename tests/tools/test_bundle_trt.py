"""`anchorvla build-trt`: a clean one-line exit 2 where TensorRT or a GPU is missing; on a GPU machine (marked
`gpu`, skipped here) the FP16 engines build, pass the gates and run behind the same interface."""

from __future__ import annotations

import importlib.util

import pytest

from anchorvla.cli import main as cli_main
from policy_runtime.bundle import read_manifest
from tests.bundle_helpers import HELD_OUT_COUNT, bundle_copy, tiny_bundle
from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
from tools.verify import verify_bundle

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed: the GPU test covers build-trt")
def test_build_trt_without_tensorrt_exits_2_with_one_line_and_leaves_the_bundle_alone(tmp_path, capsys):
    bundle = bundle_copy(tmp_path)
    before = (bundle / "manifest.json").read_text()
    assert cli_main(["build-trt", str(bundle)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "TensorRT is not installed" in err
    assert (bundle / "manifest.json").read_text() == before


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TENSORRT, reason="needs TensorRT and a CUDA GPU")
def test_tensorrt_fp16_engines_build_pass_the_gates_and_infer(tmp_path):
    from policy_runtime.engines.tensorrt_engine import TensorRTEngine

    checkpoint, _ = tiny_bundle()
    bundle = bundle_copy(tmp_path)
    assert cli_main(["build-trt", str(bundle), "--precision", "fp16"]) == 0
    assert (bundle / "trt.timing.cache").is_file()
    samples = synthetic_samples(read_manifest(bundle).runtime, bundle, HELD_OUT_COUNT, HELD_OUT_SEED)
    manifest = verify_bundle(bundle, samples, checkpoint, ["trt-fp16"])
    assert manifest.variants["trt-fp16"].status == "passed", manifest.variants["trt-fp16"].verification
    engine = TensorRTEngine(bundle, precision="fp16")
    engine.warmup()
    engine.close()
