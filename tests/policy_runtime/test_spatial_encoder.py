"""AnchorVLA4D's spatial encoder (policy_runtime/model/spatial_encoder.py): it reads each camera's current frame and
its anchor image jointly, its tokens reach the LM of both backbones and train in stage 1, `anchorvla train
--spatial-encoder` turns it on (with the anchor image), and the checkpoint exports and runs through ONNX Runtime
as the torch engine does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from anchorvla.cli import main as cli
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame
from policy_runtime.dataset import write_dataset
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.config import (
    ArchitectureConfig,
    BackboneConfig,
    HeadConfig,
    ResidualConfig,
    SpatialEncoderConfig,
)
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.spatial_encoder import SpatialEncoder
from policy_runtime.model.tokenizer import BYTE_VOCAB_SIZE
from policy_runtime.model.training import stage1_loss
from policy_runtime.types import Observation
from tests.policy_runtime.test_mamba_backbone import (
    ACTIONS,
    CAMERAS,
    PROPRIO,
    _episode,
    tiny_mamba_architecture,
)

VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16,
              patch_size=8, num_channels=3)  # fmt: skip
SPATIAL = SpatialEncoderConfig(dim=16, depth=1, heads=2, patch_size=4, grid=2)


def tiny_vlm_architecture(spatial: SpatialEncoderConfig | None = SPATIAL) -> ArchitectureConfig:
    backbone = BackboneConfig(
        vision=VISION,
        llm=dict(vocab_size=BYTE_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=False),
        lora_rank=2, lora_alpha=4, num_queries=2, num_images=2, max_instruction_tokens=8, anchor_image=True,
        spatial_encoder=spatial,
    )  # fmt: skip
    head = HeadConfig(horizon=4, action_dim=len(ACTIONS), proprio_dim=len(PROPRIO), cond_dim=32, dim=16, depth=1,
                      heads=2, num_anchors=3, inference_steps=2)  # fmt: skip
    return ArchitectureConfig(backbone=backbone, head=head, residual=ResidualConfig(hidden=8), image_size=16)


def test_each_cameras_tokens_come_from_its_current_frame_and_its_anchor_together():
    torch.manual_seed(0)
    encoder = SpatialEncoder(SPATIAL, image_size=16, num_cameras=2, out_dim=32).eval()
    images = torch.randn(1, 4, 3, 16, 16)  # camera 0, camera 1, then their anchors

    def tokens(edited_image: int | None) -> torch.Tensor:
        x = images.clone()
        if edited_image is not None:
            x[:, edited_image] += 1.0
        with torch.no_grad():
            return encoder(x).reshape(2, 4, 32)  # (camera, grid**2 tokens, width)

    plain = tokens(None)
    assert plain.shape == (2, 4, 32)
    for edited, camera in ((0, 0), (2, 0), (1, 1), (3, 1)):  # a current frame or an anchor of one camera
        out = tokens(edited)
        assert not torch.allclose(out[camera], plain[camera]), (
            edited
        )  # the anchor counts, not the current alone
        assert torch.equal(out[1 - camera], plain[1 - camera]), edited  # and only for its own camera


def test_its_tokens_reach_both_backbones_and_train_in_stage_1():
    g = torch.Generator().manual_seed(1)
    b = 2
    batch = {
        "images": torch.randn(b, 4, 3, 16, 16, generator=g),
        "input_ids": torch.randint(1, 200, (b, 8), generator=g),
        "attention_mask": torch.ones(b, 8, dtype=torch.long),
        "proprio": torch.randn(b, len(PROPRIO), generator=g),
        "proprio_delta": torch.randn(b, len(PROPRIO), generator=g) * 0.1,
        "actions": torch.rand(b, 4, len(ACTIONS), generator=g) * 2 - 1,
    }
    mamba = tiny_mamba_architecture().model_dump()
    mamba["backbone"].update(anchor_image=True, spatial_encoder=SPATIAL.model_dump())
    for arch in (tiny_vlm_architecture(), ArchitectureConfig.model_validate(mamba)):
        torch.manual_seed(0)
        policy = AnchorVLAPolicy(arch)
        if arch.head.mode == "anchored":  # AdaLN-Zero's gates open as training goes, letting the bridge in
            policy.head.anchors.copy_(batch["actions"][:1].expand(arch.head.num_anchors, -1, -1))
            for block in policy.head.blocks:
                torch.nn.init.normal_(block.modulation[1].weight, std=0.05)
        loss, _ = stage1_loss(policy, batch, torch.Generator().manual_seed(2))
        loss.backward()
        spatial = list(policy.backbone.spatial.parameters())
        assert {id(p) for p in spatial} <= {id(p) for p in policy.main_parameters()}
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in spatial), arch.backbone.kind
    # The VLM's bridge holds the spatial tokens at the vision positions: cameras * grid**2 more per layer.
    torch.manual_seed(0)
    with_it = AnchorVLAPolicy(tiny_vlm_architecture()).eval()
    torch.manual_seed(0)
    without = AnchorVLAPolicy(tiny_vlm_architecture(None)).eval()
    args = (batch["proprio"], batch["images"], batch["input_ids"], batch["attention_mask"])
    assert with_it.condition(*args).shape[1] == without.condition(*args).shape[1] + 2 * 4


def test_the_config_refuses_a_spatial_encoder_that_cannot_read_its_images():
    data = tiny_vlm_architecture().model_dump()
    data["backbone"]["anchor_image"] = False
    with pytest.raises(ValidationError, match="spatial_encoder reads the anchor image"):
        ArchitectureConfig.model_validate(data)
    data = tiny_vlm_architecture().model_dump()
    data["backbone"]["spatial_encoder"]["grid"] = 3
    with pytest.raises(ValidationError, match="image_size 16 must be patch_size 4 x a multiple of grid 3"):
        ArchitectureConfig.model_validate(data)
    with pytest.raises(ValidationError, match="not a multiple of its heads"):
        SpatialEncoderConfig(dim=16, heads=3)


def _observation(anchor_seed: int) -> Observation:
    rng = np.random.default_rng(5)
    arm = ArmState(2_000, SO101_JOINTS, rng.uniform(-0.5, 0.5, 6), np.zeros(6))
    base = BaseState(2_000, np.zeros(3), 0.0, np.zeros(3), 0.0)
    frames = {c: Frame(1_900, c, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for c in CAMERAS}
    anchor_rng = np.random.default_rng(anchor_seed)
    anchors = {c: Frame(0, c, anchor_rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for c in CAMERAS}
    return Observation(2_000, arm, base, frames, "lift the ball", anchors, goal=np.array([0.1, 0.0, 0.05]))


def test_train_flag_turns_it_on_and_the_bundle_runs_it_through_onnx_runtime(tmp_path):
    from policy_runtime.bundle import read_manifest
    from policy_runtime.engines.onnx_engine import OnnxEngine
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples
    from tools.verify import verify_bundle

    rng = np.random.default_rng(4)
    episodes = [_episode(rng, 10, task) for task in ("touch the marker", "lift the ball")]
    dataset = write_dataset(tmp_path / "ds", episodes, 15.0, ACTIONS, PROPRIO)
    arch = tmp_path / "arch.json"
    arch.write_text(tiny_vlm_architecture(None).model_dump_json())  # anchor image on, no spatial encoder
    out = tmp_path / "ckpt"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--architecture", str(arch), "--horizon", "4",
            "--num-anchors", "3", "--batch", "4", "--steps", "2", "--residual-steps", "1", "--threads", "1",
            "--no-progress", "--spatial-encoder"]  # fmt: skip
    assert cli(args) == 0
    policy, config = load_checkpoint(out)
    bb = config.architecture.backbone
    assert (
        bb.anchor_image
        and bb.spatial_encoder == SpatialEncoderConfig()
        and policy.backbone.spatial is not None
    )
    bundle = tmp_path / "bundle"
    assert cli(["export", str(out), str(bundle)]) == 0
    # ONNX Runtime against torch on the same inputs and noise (4-image inputs): verify's gates pass.
    manifest = verify_bundle(
        bundle, synthetic_samples(read_manifest(bundle).runtime, bundle, 4, HELD_OUT_SEED), out
    )
    assert manifest.variants["fp32"].status == "passed"
    # The engine feeds the anchor images to the graph: the same current frames with other anchors, another chunk.
    engine = OnnxEngine(bundle, precision="fp32", threads=1)
    chunks = []
    for anchor_seed in (10, 10, 11):
        engine.reseed(0)
        chunks.append(engine.infer(_observation(anchor_seed)).actions)
    assert np.array_equal(chunks[0], chunks[1]) and not np.allclose(chunks[0], chunks[2], atol=1e-6)
    engine.close()
