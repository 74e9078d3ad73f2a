"""LoRA adapters folded into their base weights in an exported graph: fewer MatMuls, the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from tools.onnx_lora import merge_lora


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch names its legacy exporter
def test_merged_graph_has_no_adapter_matmuls_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8, bias=False))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"])
    net = inject_adapter_in_model(lora, net).eval()
    for name, p in net.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: make the adapters count
            nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 5, 16)
    path = tmp_path / "lora.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    model = onnx.load(str(path))
    matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    reference = _session(model).run(None, {"x": x.numpy()})[0]

    assert merge_lora(model) == 2
    assert sum(n.op_type == "MatMul" for n in model.graph.node) == matmuls - 4
    np.testing.assert_allclose(
        _session(model).run(None, {"x": x.numpy()})[0], reference, rtol=1e-5, atol=1e-5
    )
    with torch.no_grad():
        assert not np.allclose(net[0].base_layer(x).numpy(), net[0](x).numpy(), atol=1e-3)  # adapters did act
