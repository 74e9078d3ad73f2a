"""AnoleVLA's backbone: SigLIP vision tower + projector + a Mamba state-space LM (transformers' MambaModel) with LoRA.

Token order (AnoleVLA): [state | state delta | vision tokens of every image (then the spatial encoder's, when
configured) | instruction tokens]. The state and
the state delta (proprio minus the previous tick's, `policy_runtime/preprocess.py`) are one token each, through
their own linear layer. The bridge is the final (normed) hidden state of the last real instruction token:
(B, 1, hidden); a linear head reads its chunk from there. The projector and the two state layers train; by default
the vision tower and the Mamba LM are frozen and LoRA adapters (on the mixer's projections) train, as in the VLM
backbone; with `llm_training` 'full' every Mamba weight trains and no adapter is added (AnoleVLA's fine-tuning),
with `vision_training` 'full' the tower's too (`load_towers`).

Sizes come from `BackboneConfig.llm` (MambaConfig kwargs). Without the CUDA kernels, transformers runs Mamba's
sequential scan (a loop over the tokens); for ONNX that loop unrolls at the graph's fixed sequence length. In
training mode the mixers use mambapy's parallel scan when it is installed (transformers' `use_mambapy`; the same
numbers, about twice as fast on CPU, where the sequential loop's backward dominates); eval mode and the export
use the sequential scan.
"""

from __future__ import annotations

import torch
from torch import nn

from policy_runtime.model.backbone import load_towers
from policy_runtime.model.config import BackboneConfig
from policy_runtime.model.spatial_encoder import build_spatial, image_tokens

STATE_TOKENS = 2  # the state and the state delta


class MambaBackbone(nn.Module):
    def __init__(self, config: BackboneConfig, proprio_dim: int):
        super().__init__()
        from transformers import MambaConfig, MambaModel

        self.config = config
        self.vision, self.llm = load_towers(config, MambaConfig, MambaModel)
        hidden = self.hidden_size
        vision_hidden = self.vision.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.spatial = build_spatial(config, self.vision.config.image_size, hidden)
        self.state_in = nn.Linear(proprio_dim, hidden)
        self.delta_in = nn.Linear(proprio_dim, hidden)

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    def train(self, mode: bool = True) -> MambaBackbone:
        from transformers.utils.import_utils import is_mambapy_available

        super().train(mode)
        for layer in self.llm.layers:
            layer.mixer.use_mambapy = mode and is_mambapy_available()
        return self

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        proprio: torch.Tensor,
        proprio_delta: torch.Tensor,
    ) -> torch.Tensor:
        """images (B, n, 3, S, S); input_ids/attention_mask (B, L) (pads at the end); proprio and proprio_delta
        (B, P) normalised -> the last instruction token's hidden state (B, 1, hidden)."""
        b = images.shape[0]
        vision_tokens = image_tokens(self, images)  # with AnchorVLA4D's spatial tokens after the tower's
        state = self.state_in(proprio)[:, None]
        delta = self.delta_in(proprio_delta)[:, None]
        text = self.llm.get_input_embeddings()(input_ids)
        embeds = torch.cat([state, delta, vision_tokens, text], dim=1)
        prefix = STATE_TOKENS + vision_tokens.shape[1]
        ones = torch.ones(b, prefix, dtype=attention_mask.dtype, device=attention_mask.device)
        mask = torch.cat([ones, attention_mask], dim=1)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        last = (prefix + attention_mask.sum(dim=1) - 1).clamp(min=prefix - 1)  # (B,)
        index = last[:, None, None].expand(b, 1, hidden.shape[-1])
        return torch.gather(hidden, 1, index)
