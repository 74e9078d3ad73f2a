"""The checkpoint directory round-trips exactly through safetensors, and a broken one fails with one clear line."""

from __future__ import annotations

import json

import pytest
import torch

from anchorvla.errors import UserError
from policy_runtime.model.checkpoint import load_checkpoint, save_checkpoint
from policy_runtime.model.config import CheckpointConfig, Normalization
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.model.tokenizer import ByteTokenizer


def _policy_and_config():
    torch.manual_seed(1)
    arch = tiny_architecture(action_dim=4, proprio_dim=5, horizon=6, num_anchors=3)
    policy = AnchorVLAPolicy(arch).eval()
    policy.head.anchors.copy_(torch.rand(3, 6, 4) * 2 - 1)
    torch.nn.init.normal_(policy.residual.mlp[-1].weight)
    config = CheckpointConfig(
        architecture=arch,
        action_layout=["base.vx", "base.vy", "base.wz", "arm.gripper"],
        proprio_layout=[f"p{i}" for i in range(5)],
        cameras=["front", "wrist"],
        normalization=Normalization(
            action_low=[-1] * 4, action_high=[1] * 4, proprio_mean=[0] * 5, proprio_std=[1] * 5
        ),
    )
    return policy, config


def _run(policy):
    ids, mask = ByteTokenizer().encode(["go"], 24)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        out = policy(
            torch.randn(1, 5, generator=g),
            torch.randn(policy.head.noise_shape(1), generator=g),
            torch.randn(1, 2, 3, 32, 32, generator=g),
            torch.from_numpy(ids),
            torch.from_numpy(mask),
        )
        res = policy.residual(torch.ones(1, 5), out[4], out[0][:, 0], torch.tensor([2]))
    return (*out, res)


def test_round_trip_gives_identical_outputs_and_the_anchors_travel_in_model_safetensors(tmp_path):
    policy, config = _policy_and_config()
    save_checkpoint(tmp_path, policy, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "residual.safetensors",
    ]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["action_layout"][0] == "base.vx" and saved["architecture"]["head"]["num_anchors"] == 3
    loaded, loaded_config = load_checkpoint(tmp_path)
    assert loaded_config == config
    assert torch.equal(loaded.head.anchors, policy.head.anchors)
    for a, b in zip(_run(policy), _run(loaded), strict=True):
        assert torch.equal(a, b)


def test_missing_or_mismatched_files_raise_one_clear_user_error(tmp_path):
    policy, config = _policy_and_config()
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path, policy, config)
    (tmp_path / "residual.safetensors").unlink()
    with pytest.raises(UserError, match="residual.safetensors not found"):
        load_checkpoint(tmp_path)
    assert load_checkpoint(tmp_path, with_residual=False)[0] is not None
    data = json.loads((tmp_path / "config.json").read_text())
    data["architecture"]["head"]["dim"] = 32
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match config.json"):
        load_checkpoint(tmp_path, with_residual=False)
    data["architecture"]["head"]["bogus"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="bogus"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    data["architecture"]["head"].pop("bogus")
    data["architecture"]["head"]["dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_checkpoint(tmp_path, with_residual=False)


def test_pretrained_towers_load_from_a_local_directory_never_the_hub(tmp_path):
    from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

    arch = tiny_architecture(action_dim=2, proprio_dim=3)
    torch.manual_seed(5)
    vision = SiglipVisionModel(SiglipVisionConfig(**arch.backbone.vision))
    llm = Qwen2Model(Qwen2Config(**arch.backbone.llm))
    vision.save_pretrained(tmp_path / "vision")
    llm.save_pretrained(tmp_path / "llm")
    paths = {"vision_path": str(tmp_path / "vision"), "llm_path": str(tmp_path / "llm")}
    backbone = arch.backbone.model_copy(update=paths)
    policy = AnchorVLAPolicy(arch.model_copy(update={"backbone": backbone}))
    assert torch.equal(policy.backbone.vision.head.mlp.fc2.weight, vision.head.mlp.fc2.weight)
    loaded_q = policy.backbone.llm.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(loaded_q, llm.layers[0].self_attn.q_proj.weight)
    missing = arch.backbone.model_copy(update=dict(paths, vision_path=str(tmp_path / "nowhere")))
    with pytest.raises(UserError, match="vision_path .*nowhere: no config.json there"):
        AnchorVLAPolicy(arch.model_copy(update={"backbone": missing}))
