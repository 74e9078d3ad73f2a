"""Ready architectures: `tiny` (tests and CPU demos, random weights, byte tokenizer) and `paper` (Qwen2.5-0.5B
dimensions, a SigLIP-base-like tower, 2 images at 224 px, 64 ActionQuery tokens, M=20, S_tr=10)."""

from __future__ import annotations

from policy_runtime.model.config import ArchitectureConfig, BackboneConfig, HeadConfig, ResidualConfig
from policy_runtime.model.tokenizer import BYTE_VOCAB_SIZE


def tiny_architecture(
    action_dim: int, proprio_dim: int, horizon: int = 8, num_anchors: int = 8, image_size: int = 32
) -> ArchitectureConfig:
    backbone = BackboneConfig(
        vision=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=image_size, patch_size=8, num_channels=3,
        ),
        llm=dict(
            vocab_size=BYTE_VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
        ),
        lora_rank=4, lora_alpha=8, num_queries=4, bridge_layers=[1, 2], num_images=2, max_instruction_tokens=24,
    )  # fmt: skip
    head = HeadConfig(
        horizon=horizon, action_dim=action_dim, proprio_dim=proprio_dim, cond_dim=64, dim=64, depth=2, heads=4,
        num_anchors=num_anchors, schedule_steps=100, truncation_ratio=0.1, inference_steps=10,
    )  # fmt: skip
    return ArchitectureConfig(
        backbone=backbone, head=head, residual=ResidualConfig(hidden=64), image_size=image_size
    )


def paper_architecture(action_dim: int = 13, proprio_dim: int = 40, horizon: int = 5) -> ArchitectureConfig:
    backbone = BackboneConfig(
        vision=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=224, patch_size=16, num_channels=3,
        ),
        llm=dict(
            vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
            num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
        ),
        lora_rank=64, lora_alpha=128, num_queries=64, bridge_layers=[-1], num_images=2, max_instruction_tokens=32,
    )  # fmt: skip
    head = HeadConfig(
        horizon=horizon, action_dim=action_dim, proprio_dim=proprio_dim, cond_dim=896, dim=256, depth=4, heads=8,
        num_anchors=20, schedule_steps=100, truncation_ratio=0.1, inference_steps=10,
    )  # fmt: skip
    return ArchitectureConfig(
        backbone=backbone, head=head, residual=ResidualConfig(hidden=120), image_size=224
    )
