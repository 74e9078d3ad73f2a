"""tools/gpu_bench.sh (TensorRT at the paper size) as far as a machine without a GPU can check it: its arguments,
the refusal before anything is built, and the bundle it builds engines from (at demo size here)."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from policy_runtime.bundle import read_manifest
from tools.gpu_bench import main, parse_args

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_arguments_default_to_the_paper_size_and_refuse_a_zero_count(capsys):
    args = parse_args(["work"])
    assert args.size == "paper" and args.repeats >= 50 and not args.prepare_only
    with pytest.raises(SystemExit) as exc:
        parse_args(["work", "--repeats", "0"])
    assert exc.value.code == 2 and "--repeats must be at least 1" in capsys.readouterr().err


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_without_tensorrt_the_script_says_so_in_one_line_before_building_anything(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run(["bash", "tools/gpu_bench.sh", str(work)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "TensorRT is not installed" in proc.stderr
    assert not work.exists()


def test_the_bundle_it_builds_has_static_qdq_int8_and_stored_references(tmp_path, capsys):
    work = tmp_path / "work"
    assert (
        main([str(work), "--size", "demo", "--prepare-only", "--calibration", "4", "--verify-count", "4"])
        == 0
    )
    manifest = read_manifest(work / "demo-bundle")
    assert (
        "static" in manifest.graphs[manifest.variants["int8"].graphs["backbone"]].method
    )  # build-trt int8 takes it
    assert manifest.variants["fp32"].status == "passed"
    assert manifest.references is not None and manifest.references.samples == 4
    assert main([str(work), "--size", "demo", "--prepare-only"]) == 0  # the second run uses it again
    assert "using" in capsys.readouterr().out
