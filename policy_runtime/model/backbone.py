"""The VLA backbone: SigLIP vision tower + projector + Qwen2 causal LM with LoRA and learnable ActionQuery tokens.

Token order: [vision tokens of every image | instruction tokens | ActionQuery tokens]. The bridge features are
the hidden states of `bridge_layers` at the vision and query positions, concatenated along the token axis:
(B, len(bridge_layers) * (num_images * patches + num_queries), llm_hidden). The vision tower and the LM are frozen;
LoRA adapters, the projector and the queries train.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anchorvla.errors import UserError
from policy_runtime.model.config import BackboneConfig


def load_towers(config: BackboneConfig, lm_config_class=None, lm_class=None) -> tuple[nn.Module, nn.Module]:
    """The vision tower and the language model (Qwen2 unless other transformers classes are given), frozen, the LM
    with LoRA adapters on `lora_targets`: random weights from the config's sizes, or `pretrained_dir`'s local
    `vision/` and `llm/` checkpoints (never the hub)."""
    vision, llm = _pretrained_or_random(config, lm_config_class, lm_class)
    from peft import LoraConfig, inject_adapter_in_model

    for p in [*vision.parameters(), *llm.parameters()]:
        p.requires_grad_(False)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=config.lora_targets)
    return vision, inject_adapter_in_model(lora, llm)


def _pretrained_or_random(config: BackboneConfig, lm_config_class, lm_class) -> tuple[nn.Module, nn.Module]:
    from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

    lm_config_class, lm_class = lm_config_class or Qwen2Config, lm_class or Qwen2Model
    if config.pretrained_dir is None:
        vision = SiglipVisionModel(SiglipVisionConfig(**config.vision))
        llm = lm_class(lm_config_class(**config.llm))
        return vision, llm
    root = Path(config.pretrained_dir)
    for part in ("vision", "llm"):
        if not (root / part).is_dir():
            raise UserError(
                f"backbone.pretrained_dir {root} has no {part}/ directory (a transformers checkpoint)"
            )
    vision = SiglipVisionModel.from_pretrained(root / "vision", local_files_only=True)
    llm = lm_class.from_pretrained(root / "llm", local_files_only=True)
    return vision, llm


class VLABackbone(nn.Module):
    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.vision, self.llm = load_towers(config)
        hidden = self.llm.config.hidden_size
        vision_hidden = self.vision.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.action_queries = nn.Parameter(torch.randn(config.num_queries, hidden) * 0.02)

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """images (B, num_images, 3, S, S) normalised; input_ids/attention_mask (B, L) -> bridge features."""
        b, n = images.shape[:2]
        patches = self.vision(pixel_values=images.flatten(0, 1)).last_hidden_state  # (B*n, P, Dv)
        vision_tokens = self.projector(patches).reshape(b, -1, self.hidden_size)
        text_tokens = self.llm.embed_tokens(input_ids)
        queries = self.action_queries[None].expand(b, -1, -1)
        embeds = torch.cat([vision_tokens, text_tokens, queries], dim=1)
        nv, nq = vision_tokens.shape[1], queries.shape[1]
        ones_v = torch.ones(b, nv, dtype=attention_mask.dtype, device=attention_mask.device)
        ones_q = torch.ones(b, nq, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([ones_v, attention_mask, ones_q], dim=1)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True, use_cache=False)
        bridge = []
        for layer in self.config.bridge_layers:
            h = out.hidden_states[layer]
            bridge.append(torch.cat([h[:, :nv], h[:, -nq:]], dim=1))
        return torch.cat(bridge, dim=1)
