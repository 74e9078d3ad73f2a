"""The Mamba backbone fully fine-tuned (AnoleVLA), beside LoRA: `anchorvla train --llm-training full` trains every
Mamba weight and adds no adapter, and the checkpoint exports and runs through ONNX Runtime like the LoRA one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anchorvla.cli import main as cli
from policy_runtime.dataset import write_dataset
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.policy import AnchorVLAPolicy
from tests.policy_runtime.test_mamba_backbone import (
    ACTIONS,
    PROPRIO,
    _episode,
    _observation,
    tiny_mamba_architecture,
)

MIXER = ("in_proj", "x_proj", "dt_proj", "out_proj")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("mamba_full")
    rng = np.random.default_rng(1)
    episodes = [_episode(rng, 10, task) for task in ("touch the marker", "lift the ball")]
    dataset = write_dataset(root / "ds", episodes, 15.0, ACTIONS, PROPRIO)
    arch = root / "architecture.json"
    arch.write_text(tiny_mamba_architecture().model_dump_json())
    out = {}
    for mode in ("lora", "full"):
        out[mode] = root / mode
        args = ["train", "--dataset", str(dataset), "--out", str(out[mode]), "--architecture", str(arch),
                "--horizon", "4", "--batch", "4", "--steps", "3", "--residual-steps", "1", "--threads", "1",
                "--no-progress", "--llm-training", mode]  # fmt: skip
        assert cli(args) == 0
    return out


def _mixer_weights(policy) -> dict[str, torch.Tensor]:
    """Each mixer projection's own weight (under LoRA, the wrapped base layer's)."""
    out = {}
    for name, tensor in policy.backbone.llm.state_dict().items():
        if any(f"mixer.{p}." in name for p in MIXER) and name.endswith("weight") and "lora_" not in name:
            out[name.replace("base_layer.", "")] = tensor
    return out


def test_full_fine_tuning_trains_every_mamba_weight_and_adds_no_adapter(trained):
    full, config = load_checkpoint(trained["full"])
    lora, _ = load_checkpoint(trained["lora"])
    assert config.architecture.backbone.llm_training == "full"
    assert not [n for n, _ in full.named_parameters() if "lora_" in n]
    assert [n for n, _ in lora.named_parameters() if "lora_" in n]
    # Both started from the same weights (same seed): LoRA left them there, full fine-tuning moved every one.
    torch.manual_seed(0)
    start = _mixer_weights(AnchorVLAPolicy(config.architecture))
    kept, moved = _mixer_weights(lora), _mixer_weights(full)
    assert start.keys() == kept.keys() == moved.keys() and len(start) == 4
    assert all(torch.equal(start[k], kept[k]) for k in start)
    assert not any(torch.allclose(start[k], moved[k]) for k in start)


def test_fully_fine_tuned_mamba_exports_and_runs_through_onnx_runtime(trained, tmp_path):
    from policy_runtime.engines.onnx_engine import OnnxEngine
    from policy_runtime.engines.torch_engine import TorchEngine

    bundle = tmp_path / "bundle"
    assert cli(["export", str(trained["full"]), str(bundle)]) == 0
    onnx_engine = OnnxEngine(bundle, precision="fp32", threads=1, force_unverified=True)
    torch_engine = TorchEngine(trained["full"], threads=1)
    for obs in (_observation(0.0), _observation(0.05)):
        a, b = onnx_engine.infer(obs), torch_engine.infer(obs)
        assert a.channels == tuple(ACTIONS) and np.allclose(a.actions, b.actions, atol=1e-4)
    onnx_engine.close()


def test_tower_flags_need_a_backbone(tmp_path, capsys):
    from policy_runtime.model.config import ArchitectureConfig, HeadConfig

    head = HeadConfig(mode="linear", horizon=4, action_dim=len(ACTIONS), proprio_dim=len(PROPRIO), cond_dim=8)
    arch = tmp_path / "arch.json"
    arch.write_text(ArchitectureConfig(backbone=None, head=head).model_dump_json())
    rng = np.random.default_rng(2)
    dataset = write_dataset(tmp_path / "ds", [_episode(rng, 8, "reach")], 15.0, ACTIONS, PROPRIO)
    args = ["train", "--dataset", str(dataset), "--out", str(tmp_path / "x"), "--architecture", str(arch),
            "--horizon", "4", "--llm-training", "full"]  # fmt: skip
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--llm-training: needs an architecture with a backbone (images)") and "\n" not in err
