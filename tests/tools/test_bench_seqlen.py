"""`anchorvla bench seqlen`: the growth exponent, the verdict and the table, on tiny sizes (timing is not asserted)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from anchorvla.errors import UserError
from tools import bench_seqlen


def test_growth_exponent_is_the_log_log_slope():
    lengths = [256, 512, 1024, 2048]
    assert bench_seqlen.growth_exponent(lengths, [3e-3 * n for n in lengths]) == pytest.approx(1.0)
    assert bench_seqlen.growth_exponent(lengths, [1e-6 * n**2 + 0 for n in lengths]) == pytest.approx(2.0)


def test_verdict_needs_linear_mamba_and_superlinear_transformer():
    figures = {"mamba_exponent": 1.02, "transformer_exponent": 1.6}
    assert bench_seqlen.verdict(figures, 1.25, 1.3)
    assert not bench_seqlen.verdict({**figures, "mamba_exponent": 1.5}, 1.25, 1.3)
    assert not bench_seqlen.verdict({**figures, "transformer_exponent": 1.1}, 1.25, 1.3)


def test_tiny_run_measures_both_backbones_and_prints_the_table(capsys):
    parser = argparse.ArgumentParser()
    bench_seqlen.add_arguments(parser)
    args = parser.parse_args(
        ["--lengths", "8", "16", "32", "--width", "16", "--layers", "1", "--repeats", "1"]
    )
    figures, ok = bench_seqlen.main(args)
    assert figures["lengths"] == [8, 16, 32] and isinstance(ok, bool)
    for name in ("transformer", "mamba"):
        assert len(figures[f"{name}_ms"]) == 3 and all(v > 0 for v in figures[f"{name}_ms"])
        assert np.isfinite(figures[f"{name}_exponent"])
    out = capsys.readouterr().out
    assert "exponent" in out and "transformer ms" in out and out.count("\n") >= 8


def test_bad_lengths_are_one_clear_error():
    parser = argparse.ArgumentParser()
    bench_seqlen.add_arguments(parser)
    with pytest.raises(UserError, match="at least two"):
        bench_seqlen.main(parser.parse_args(["--lengths", "256"]))
