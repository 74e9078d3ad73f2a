"""The AnchorVLA model: a tiny backbone + head built in code, the fixed-length denoising loop, the residual."""

from __future__ import annotations

import torch

from policy_runtime.model.config import ResidualConfig
from policy_runtime.model.head import DiTBlock, step_timesteps
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.model.residual import ResidualModule
from policy_runtime.model.tokenizer import ByteTokenizer


def _inputs(policy: AnchorVLAPolicy, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids, mask = ByteTokenizer().encode(["pick the cup", "open the drawer"][:batch], 24)
    images = torch.randn(batch, 2, 3, 32, 32, generator=g)
    proprio = torch.randn(batch, 12, generator=g)
    noise = torch.randn(policy.head.noise_shape(batch), generator=g)
    return proprio, noise, images, torch.from_numpy(ids), torch.from_numpy(mask)


def test_tiny_policy_returns_a_chunk_the_argmax_candidate_and_all_scores():
    torch.manual_seed(0)
    policy = AnchorVLAPolicy(tiny_architecture(action_dim=9, proprio_dim=12, horizon=8, num_anchors=6)).eval()
    policy.head.anchors.copy_(torch.rand(6, 8, 9) * 2 - 1)
    with torch.no_grad():
        chunk, index, scores, candidates, context = policy(*_inputs(policy))
    assert chunk.shape == (2, 8, 9) and scores.shape == (2, 6) and candidates.shape == (2, 6, 8, 9)
    assert context.shape == (2, 64)
    assert torch.equal(index, scores.argmax(dim=1))
    for b in range(2):
        assert torch.equal(chunk[b], candidates[b, index[b]])
    assert chunk.abs().max() <= 1.0


def test_dit_block_attends_each_candidate_to_its_own_observations_memory():
    # The block shares the memory's keys/values among an observation's K candidates; the result must equal
    # attending each candidate separately to a copy of that memory, and never mix observations.
    torch.manual_seed(0)
    block = DiTBlock(16, 2).eval()
    torch.nn.init.normal_(block.modulation[1].weight, std=0.1)  # non-zero gates, so every branch counts
    b, k, t, n = 3, 4, 5, 7
    x, c, memory = torch.randn(b * k, t, 16), torch.randn(b, 16), torch.randn(b, n, 16)
    with torch.no_grad():
        shared = block(x, c, memory, k)
        separate = torch.cat(
            [
                block(x[i * k + j : i * k + j + 1], c[i : i + 1], memory[i : i + 1], 1)
                for i in range(b)
                for j in range(k)
            ]
        )
        other = block(x, c, memory.roll(1, dims=0), k)
    assert torch.allclose(shared, separate, atol=1e-5)
    assert not torch.allclose(shared, other, atol=1e-3)


def test_only_lora_projector_queries_and_head_train_the_towers_are_frozen():
    policy = AnchorVLAPolicy(tiny_architecture(action_dim=3, proprio_dim=4))
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and "backbone.action_queries" in trainable
    assert not any(n.startswith("backbone.vision.") for n in trainable)
    assert not any(n.startswith("backbone.llm.") and "lora_" not in n for n in trainable)
    assert not any(
        n.startswith("residual.")
        for n in {n for n, p in policy.named_parameters() if p in set(policy.main_parameters())}
    )


def test_vision_training_full_trains_the_tower_and_llm_training_full_trains_the_lm_without_adapters():
    arch = tiny_architecture(action_dim=3, proprio_dim=4)
    arch.backbone.vision_training = "full"
    policy = AnchorVLAPolicy(arch)
    main = {n for n, p in policy.named_parameters() if p in set(policy.main_parameters())}
    assert {n for n, _ in policy.backbone.vision.named_parameters(prefix="backbone.vision")} <= main
    assert not any(n.startswith("backbone.llm.") and "lora_" not in n for n in main)

    arch.backbone.vision_training, arch.backbone.llm_training = "frozen", "full"
    policy = AnchorVLAPolicy(arch)
    main = {n for n, p in policy.named_parameters() if p in set(policy.main_parameters())}
    llm = {n for n, _ in policy.backbone.llm.named_parameters(prefix="backbone.llm")}
    assert llm <= main and not any("lora_" in n for n in llm)
    assert not any(n.startswith("backbone.vision.") for n in main)


def test_instruction_changes_the_bridge_features():
    torch.manual_seed(0)
    policy = AnchorVLAPolicy(tiny_architecture(action_dim=3, proprio_dim=12)).eval()
    proprio, _, images, ids, mask = _inputs(policy)
    with torch.no_grad():
        bridge = policy.condition(proprio, images, ids, mask)
    # 2 bridge layers x (2 images x 16 patches + 4 queries)
    assert bridge.shape == (2, 2 * (2 * 16 + 4), 64)
    # Same images for both rows: the query features still differ because the instructions do.
    with torch.no_grad():
        same_images = policy.condition(proprio, images[:1].expand(2, -1, -1, -1, -1), ids, mask)
    assert not torch.allclose(same_images[0, -4:], same_images[1, -4:])


def test_truncated_schedule_steps_run_from_s_tr_minus_one_down_to_zero():
    assert step_timesteps(9, 10) == list(range(9, -1, -1))
    assert step_timesteps(9, 5) == [9, 7, 4, 2, 0]
    assert step_timesteps(0, 10) == [0]
    policy = AnchorVLAPolicy(tiny_architecture(action_dim=3, proprio_dim=4))
    assert policy.head.config.truncated_steps == 10
    assert policy.head.sample_timesteps() == list(range(9, -1, -1))
    assert policy.head.sample_timesteps(5) == [9, 7, 4, 2, 0]


def test_residual_has_about_57k_parameters_at_paper_size_and_starts_as_zero_correction():
    residual = ResidualModule(ResidualConfig(), proprio_dim=40, context_dim=256, action_dim=13)
    count = sum(p.numel() for p in residual.parameters())
    assert 50_000 <= count <= 64_000
    out = residual(torch.randn(3, 40), torch.randn(3, 256), torch.randn(3, 13), torch.tensor([0, 1, 4]))
    assert out.shape == (3, 13) and torch.count_nonzero(out) == 0


def test_the_whole_denoising_loop_exports_to_one_onnx_graph_that_matches_torch(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from policy_runtime.model.config import ArchitectureConfig, HeadConfig

    torch.manual_seed(0)
    head = HeadConfig(
        horizon=8, action_dim=2, proprio_dim=4, cond_dim=16, dim=16, depth=1, heads=2, num_anchors=5
    )
    policy = AnchorVLAPolicy(ArchitectureConfig(backbone=None, head=head)).eval()
    policy.head.anchors.copy_(torch.rand(5, 8, 2) * 2 - 1)

    class ChunkOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, proprio, noise):
            return self.policy(proprio, noise)[:3]

    proprio, noise = torch.randn(1, 4), torch.randn(policy.head.noise_shape(1))
    path = tmp_path / "head.onnx"
    torch.onnx.export(ChunkOnly(), (proprio, noise), str(path), opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    chunk, index, scores = session.run(None, dict(zip(names, (proprio.numpy(), noise.numpy()), strict=True)))
    with torch.no_grad():
        ref_chunk, ref_index, ref_scores = ChunkOnly()(proprio, noise)
    np.testing.assert_allclose(chunk, ref_chunk.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)
    assert int(index[0]) == int(ref_index[0])
