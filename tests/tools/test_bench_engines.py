"""`anchorvla bench engines`: each engine's chunk split by module (vision, LLM, head and its denoising loop,
residual), in a worker process pinned to the CPUs asked for; a CPU list the process may not use is refused."""

from __future__ import annotations

import os

import pytest

from anchorvla.cli import main as cli_main
from tests.bundle_helpers import tiny_bundle
from tools.bench_engines import measure
from tools.engine_split import head_part, module_of


def test_exported_node_names_are_classified_by_their_module_path():
    assert module_of("/backbone/vision/encoder/layers.0/self_attn/q_proj/MatMul") == "vision"
    assert module_of("/backbone/projector/projector.0/MatMul") == "vision"
    assert module_of("/backbone/llm/layers.3/mlp/down_proj/MatMul_quant") == "llm"
    assert module_of("gemm_input_reshape_token_2") == "other"
    assert head_part("/cond_in/cond_in.1/MatMul") == "once"
    assert head_part("/blocks.1/cross_attn_3/MatMul") == "denoise"


@pytest.mark.parametrize("kind", ["torch-fp32", "ort-int8"])
def test_worker_splits_the_chunk_by_module_on_the_cpu_it_was_pinned_to(kind):
    _checkpoint, bundle = tiny_bundle()
    cpu = max(os.sched_getaffinity(0))
    row = measure(kind, bundle, threads=1, repeats=3, cpus=[cpu])
    assert "error" not in row, row
    split = row["split_ms"]
    assert row["cpus"] == [cpu]
    assert split["vision"] > 0 and split["llm"] > 0 and split["head"] > 0 and split["residual_call"] > 0
    # The parts add up to the backbone; the denoising loop is part of the head.
    assert split["vision"] + split["llm"] + split["other"] == pytest.approx(split["backbone"], rel=1e-6)
    assert 0 < split["head_denoise"] <= split["head"]


def test_cpus_outside_the_process_affinity_are_refused_in_one_line(capsys):
    _checkpoint, bundle = tiny_bundle()
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", "engines", str(bundle), "--cpus", "4096"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "may run on CPUs" in err and "Traceback" not in err
