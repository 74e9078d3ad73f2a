"""The VLA backbone: SigLIP vision tower + projector + Qwen2 causal LM with LoRA and learnable ActionQuery tokens.

Token order: [vision tokens of every image | instruction tokens | ActionQuery tokens]; with AnchorVLA4D's
spatial encoder (policy_runtime/model/spatial_encoder.py) its tokens follow the vision tokens and count as vision
positions. The bridge features are the hidden states of `bridge_layers` at the vision and query positions
(N = num_images * patches + num_queries tokens per layer): with `bridge` 'concat' concatenated along the token axis,
(B, len(bridge_layers) * N, llm_hidden); with 'layers' (VLA-Adapter) stacked, (B, len(bridge_layers), N,
llm_hidden), one layer per head block.
By default the vision tower and the LM are frozen and LoRA adapters, the projector and the queries train
(`vision_training` / `llm_training` train the towers' own weights instead).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from torch import nn

from anchorvla.errors import UserError
from policy_runtime.model.config import BackboneConfig
from policy_runtime.model.spatial_encoder import build_spatial, image_tokens

# Keys of a transformers config that are not the architecture (saved with the checkpoint's tower sizes).
_NOT_SIZES = ("transformers_version", "architectures", "dtype", "torch_dtype", "model_type", "_name_or_path")
# A tower's model_type -> the directories' model_types that hold it (a whole SigLIP model holds its vision tower).
_HOLDERS = {"siglip_vision_model": ("siglip_vision_model", "siglip")}


def load_towers(config: BackboneConfig, lm_config_class=None, lm_class=None) -> tuple[nn.Module, nn.Module]:
    """The vision tower and the language model (Qwen2 unless other transformers classes are given): random weights
    from the config's sizes, or the local Hugging Face directories `vision_path` / `llm_path` (never the hub).
    What trains follows `vision_training` (frozen or full) and `llm_training` (LoRA adapters on `lora_targets`,
    or every LM weight)."""
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2Config, Qwen2Model, SiglipVisionConfig, SiglipVisionModel

    vision = _tower(SiglipVisionModel, SiglipVisionConfig, config.vision, config.vision_path, "vision_path")
    llm = _tower(
        lm_class or Qwen2Model, lm_config_class or Qwen2Config, config.llm, config.llm_path, "llm_path"
    )
    vision.requires_grad_(config.vision_training == "full")
    if config.llm_training == "full":
        return vision, llm.requires_grad_(True)
    llm.requires_grad_(False)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=config.lora_targets)
    return vision, inject_adapter_in_model(lora, llm)


def _tower(model_class, config_class, sizes: dict, path: str | None, field: str) -> nn.Module:
    if path is None:
        return model_class(config_class(**sizes))
    directory = Path(path)
    _check_family(directory, config_class.model_type, field)
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a SigLIP checkpoint's text tower is left out by design: no report of it
    hf_logging.disable_progress_bar()
    try:
        return model_class.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"backbone.{field} {directory}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _check_family(directory: Path, model_type: str, field: str) -> None:
    """Refuse, before loading, a directory that holds another kind of model: transformers would read its
    config.json as `model_type`'s defaults (for Qwen2, a 7B-sized model) instead of failing."""
    config = directory / "config.json"
    if not config.is_file():
        raise UserError(
            f"backbone.{field} {directory}: no config.json there (a local Hugging Face model directory, e.g. "
            "from `huggingface-cli download ... --local-dir DIR`)"
        )
    try:
        found = json.loads(config.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"backbone.{field} {config} is not a JSON object; download the model again") from None
    if found not in _HOLDERS.get(model_type, (model_type,)):
        raise UserError(
            f"backbone.{field} {directory} holds a {found!r} model, not a {model_type!r} one: point it at a "
            f"{model_type} model's directory"
        )


def tower_sizes(tower: nn.Module) -> dict:
    """The transformers config kwargs that rebuild `tower`'s architecture (what a checkpoint saves)."""
    return {k: v for k, v in tower.config.to_diff_dict().items() if k not in _NOT_SIZES}


class VLABackbone(nn.Module):
    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.vision, self.llm = load_towers(config)
        depth = int(self.llm.config.num_hidden_layers)
        bad = [layer for layer in config.bridge_layers if not -depth - 1 <= layer <= depth]
        if bad:
            raise UserError(
                f"backbone.bridge_layers {bad}: the LM has {depth} layers (0 is the embeddings, -1 the last layer)"
            )
        hidden = self.llm.config.hidden_size
        vision_hidden = self.vision.config.hidden_size
        self.projector = nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.spatial = build_spatial(config, self.vision.config.image_size, hidden)
        self.action_queries = nn.Parameter(torch.randn(config.num_queries, hidden) * 0.02)
        # transformers 5.2x renamed the LM's past_key_values argument and output to `cache`.
        self._cache_name = (
            "cache" if "cache" in inspect.signature(self.llm.forward).parameters else "past_key_values"
        )

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    def instruction_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """With token_order 'instruction_first': the LM's keys and values of the instruction tokens, which no
        later token changes, to pass to `forward` for every chunk of the episode (a transformers Cache)."""
        if self.config.token_order != "instruction_first":
            raise ValueError("an instruction cache needs backbone.token_order 'instruction_first'")
        text = self.llm.embed_tokens(input_ids)
        out = self.llm(inputs_embeds=text, attention_mask=attention_mask, use_cache=True)
        return getattr(out, self._cache_name)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        instruction_cache=None,
    ) -> torch.Tensor:
        """images (B, num_images, 3, S, S) normalised; input_ids/attention_mask (B, L) -> bridge features.
        `instruction_cache` (token_order 'instruction_first'): `instruction_cache(input_ids, attention_mask)`'s
        result; the LM then runs the vision and query tokens only (the cache itself is left as it was)."""
        b = images.shape[0]
        vision_tokens = image_tokens(self, images)
        queries = self.action_queries[None].expand(b, -1, -1)
        nv, nq = vision_tokens.shape[1], queries.shape[1]
        ones = torch.ones(b, nv + nq, dtype=attention_mask.dtype, device=attention_mask.device)
        past = {}
        if self.config.token_order == "vision_first":
            embeds = torch.cat([vision_tokens, self.llm.embed_tokens(input_ids), queries], dim=1)
            mask = torch.cat([ones[:, :nv], attention_mask, ones[:, nv:]], dim=1)
        elif instruction_cache is None:
            embeds = torch.cat([self.llm.embed_tokens(input_ids), vision_tokens, queries], dim=1)
            mask = torch.cat([attention_mask, ones], dim=1)
        else:
            embeds = torch.cat([vision_tokens, queries], dim=1)
            mask = torch.cat([attention_mask, ones], dim=1)  # the cached instruction's keys, then these
            past = {self._cache_name: instruction_cache}
        try:
            out = self.llm(
                inputs_embeds=embeds, attention_mask=mask, use_cache=bool(past), output_hidden_states=True, **past,
            )  # fmt: skip
        finally:  # the LM appended this chunk's keys and values to the cache: back to the instruction's
            if past:
                instruction_cache.crop(-embeds.shape[1])
        start = 0 if self.config.token_order == "vision_first" else embeds.shape[1] - nv - nq
        bridge = [
            torch.cat(
                [out.hidden_states[layer][:, start : start + nv], out.hidden_states[layer][:, -nq:]], dim=1
            )
            for layer in self.config.bridge_layers
        ]
        return torch.stack(bridge, dim=1) if self.config.bridge == "layers" else torch.cat(bridge, dim=1)
