"""The quantizer's output is a progress bar per graph, not onnxruntime's per-tensor and per-node INFO lines
(thousands per graph at the paper size), whatever the logging level."""

from __future__ import annotations

import logging
import re

import pytest

from tests.bundle_helpers import bundle_copy
from tools.quantize import quantize_bundle


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantizing_logs_nothing_at_info_and_the_bar_reaches_its_end(tmp_path, caplog, capsys, precision):
    bundle = bundle_copy(tmp_path)
    caplog.set_level(logging.INFO)
    quantize_bundle(bundle, precision)
    noisy = [r.getMessage() for r in caplog.records if r.name.startswith("onnxruntime") or r.name == "root"]
    assert noisy == []
    bars = re.findall(rf"{precision} backbone: 100%\|[^|]*\| (\d+)/(\d+)", capsys.readouterr().err)
    assert bars and all(done == total for done, total in bars)
    if precision == "int4":  # the bar moved once per MatMul the quantizer took
        assert int(bars[-1][1]) > 2
