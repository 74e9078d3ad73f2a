"""AnchorVLAPolicy: backbone (or, without one, a compact encoder of the proprio vector) + action head + residual.

The backbone is the VLM (`backbone.kind` 'vlm') or AnoleVLA's Mamba ('mamba', which also reads the state and the
state delta); the head is the anchored/diffusion/regression DiT or AnoleVLA's linear head (`head.mode` 'linear').
Shapes: images (B, num_images, 3, S, S) normalised; input_ids/attention_mask (B, L); proprio (B, P) normalised;
proprio_delta (B, P) normalised (Mamba backbone only); noise as `head.noise_shape(B)`. Actions come out normalised to [-1, 1]; the checkpoint's normalization maps them
to SI units.
"""

from __future__ import annotations

import torch
from torch import nn

from policy_runtime.model.backbone import VLABackbone
from policy_runtime.model.config import ArchitectureConfig
from policy_runtime.model.gripper import GripperHead
from policy_runtime.model.head import AnchoredDiffusionHead
from policy_runtime.model.linear_head import LinearHead
from policy_runtime.model.mamba_backbone import MambaBackbone
from policy_runtime.model.residual import ResidualModule

STATE_TOKENS = 4  # tokens the compact state encoder makes when there is no VLM backbone


class StateEncoder(nn.Module):
    """Without a VLM backbone (the ablation's synthetic task), the head cross-attends to tokens made from proprio."""

    def __init__(self, proprio_dim: int, width: int):
        super().__init__()
        self.width = width
        self.mlp = nn.Sequential(
            nn.Linear(proprio_dim, width), nn.SiLU(), nn.Linear(width, STATE_TOKENS * width)
        )

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.mlp(proprio).reshape(proprio.shape[0], STATE_TOKENS, self.width)


class AnchorVLAPolicy(nn.Module):
    def __init__(self, config: ArchitectureConfig):
        super().__init__()
        self.config = config
        head_cfg = config.head
        if config.backbone is not None:
            self.backbone: VLABackbone | MambaBackbone | None = (
                MambaBackbone(config.backbone, head_cfg.proprio_dim)
                if config.backbone.kind == "mamba"
                else VLABackbone(config.backbone)
            )
            self.state_encoder: StateEncoder | None = None
            if self.backbone.hidden_size != head_cfg.cond_dim:
                raise ValueError(
                    f"head.cond_dim {head_cfg.cond_dim} != LM hidden size {self.backbone.hidden_size}"
                )
        else:
            self.backbone = None
            self.state_encoder = StateEncoder(head_cfg.proprio_dim, head_cfg.cond_dim)
        self.head = LinearHead(head_cfg) if head_cfg.mode == "linear" else AnchoredDiffusionHead(head_cfg)
        self.residual = ResidualModule(
            config.residual, head_cfg.proprio_dim, self.head.context_dim, head_cfg.action_dim
        )
        self.gripper_head = (
            GripperHead(config.gripper_head, head_cfg) if config.gripper_head is not None else None
        )

    @property
    def reads_state_delta(self) -> bool:
        """Whether the backbone takes the state and the state delta (the Mamba backbone)."""
        return isinstance(self.backbone, MambaBackbone)

    def condition(
        self,
        proprio: torch.Tensor,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        proprio_delta: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The features the head reads: backbone bridge features, or state tokens without a backbone."""
        if self.backbone is None:
            assert self.state_encoder is not None
            return self.state_encoder(proprio)
        if images is None or input_ids is None or attention_mask is None:
            raise ValueError("a policy with a backbone needs images, input_ids and attention_mask")
        if self.reads_state_delta:
            if proprio_delta is None:
                raise ValueError("the Mamba backbone needs proprio_delta (the state delta)")
            return self.backbone(images, input_ids, attention_mask, proprio, proprio_delta)
        return self.backbone(images, input_ids, attention_mask)

    def forward(
        self,
        proprio: torch.Tensor,
        noise: torch.Tensor,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_steps: int | None = None,
        proprio_delta: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk: (chunk (B, H, d), anchor index (B,), scores (B, K), candidates (B, K, H, d), context (B, C))."""
        cond = self.condition(proprio, images, input_ids, attention_mask, proprio_delta)
        return self.head.sample(cond, proprio, noise, num_steps)

    def main_parameters(self) -> list[nn.Parameter]:
        """What stage 1 trains: LoRA, projector, queries (or the state encoder) and the head; never the residual."""
        return [
            p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("residual.")
        ]
