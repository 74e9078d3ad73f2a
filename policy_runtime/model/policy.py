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

from anchorvla.errors import UserError
from policy_runtime.model.backbone import VLABackbone
from policy_runtime.model.config import ArchitectureConfig, GripperHeadConfig
from policy_runtime.model.gripper import GripperHead
from policy_runtime.model.head import AnchoredDiffusionHead
from policy_runtime.model.linear_head import LinearHead
from policy_runtime.model.mamba_backbone import MambaBackbone
from policy_runtime.model.residual import ResidualModule
from policy_runtime.model.tokenizer import ByteTokenizer, LocalTokenizer, build_tokenizer, check_against_lm

STATE_TOKENS = 4  # tokens the compact state encoder makes when there is no VLM backbone
GOAL_DIM = 3  # goal.x, goal.y, goal.z: what the goal probe predicts


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


class GoalProbe(nn.Module):
    """Training only (`anchorvla train --goal-probe`): the goal's position (x, y, z, normalised) read from the
    mean of the bridge's ActionQuery tokens, the tokens that see the images and the instruction. Its loss makes
    the backbone locate the target the instruction names; nothing onboard runs it."""

    def __init__(self, width: int, num_queries: int):
        super().__init__()
        self.num_queries = num_queries
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, GOAL_DIM))

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond (B, N, C) or, with the layer-wise bridge, (B, depth, N, C) -> (B, 3); the last layer's queries."""
        last = cond if cond.dim() == 3 else cond[:, -1]
        return self.mlp(last[:, -self.num_queries :].mean(dim=1))


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
            self.tokenizer: ByteTokenizer | LocalTokenizer | None = self._checked_tokenizer()
        else:
            self.backbone = None
            self.state_encoder = StateEncoder(head_cfg.proprio_dim, head_cfg.cond_dim)
            self.tokenizer = None
        self.head = LinearHead(head_cfg) if head_cfg.mode == "linear" else AnchoredDiffusionHead(head_cfg)
        self.residual = ResidualModule(
            config.residual, head_cfg.proprio_dim, self.head.context_dim, head_cfg.action_dim
        )
        self.gripper_head = (
            GripperHead(config.gripper_head, head_cfg) if config.gripper_head is not None else None
        )
        self.goal_probe = (
            GoalProbe(head_cfg.cond_dim, config.backbone.num_queries) if config.goal_probe else None
        )

    def _checked_tokenizer(self) -> ByteTokenizer | LocalTokenizer:
        """The instruction tokenizer, once the towers are checked against the rest of the architecture and it
        against the LM (each mismatch one line naming both sides)."""
        assert self.backbone is not None
        bb, cfg = self.config.backbone, self.config
        lm = bb.llm_path or "backbone.llm"
        if self.backbone.hidden_size != cfg.head.cond_dim:
            raise UserError(
                f"head.cond_dim {cfg.head.cond_dim} but the LM {lm} is {self.backbone.hidden_size} wide: "
                f"set head.cond_dim to {self.backbone.hidden_size}"
            )
        tower_size = self.backbone.vision.config.image_size
        if tower_size != cfg.image_size:
            raise UserError(
                f"image_size {cfg.image_size} but the vision tower {bb.vision_path or 'backbone.vision'} reads "
                f"{tower_size} px images: set image_size to {tower_size}"
            )
        tokenizer = build_tokenizer(bb.tokenizer)
        llm = self.backbone.llm
        # A random LM has no text of its own; a pretrained one (or its saved sizes) names its end-of-text id.
        eos = llm.config.eos_token_id if bb.llm_path or "eos_token_id" in bb.llm else None
        check_against_lm(tokenizer, llm.get_input_embeddings().num_embeddings, eos, lm)
        return tokenizer

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
        """What stage 1 trains: LoRA, projector, queries (or the state encoder), the head and the goal probe; never
        the residual or the gripper head, which learn on the finished plans in stages of their own."""
        return [
            p
            for name, p in self.named_parameters()
            if p.requires_grad and not name.startswith(("residual.", "gripper_head."))
        ]

    def add_gripper_head(self, config: GripperHeadConfig) -> None:
        """A new, untrained gripper head (AnchorRefine) on this policy: `anchorvla train --gripper-from`."""
        self.config = self.config.model_copy(update={"gripper_head": config})
        self.gripper_head = GripperHead(config, self.config.head)
