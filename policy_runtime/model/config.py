"""The checkpoint's `config.json`: architecture sizes, action/proprio layouts by name, normalization, anchors
meta and provenance. Pydantic because it is a file; every section rejects unknown keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anchorvla.errors import UserError

FORMAT_VERSION = 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SpatialEncoderConfig(_Section):
    """AnchorVLA4D's spatial encoder (policy_runtime/model/spatial_encoder.py): a small transformer over each
    camera's current frame and its anchor image together; grid**2 tokens per camera go to the LM after the vision
    tower's."""

    dim: int = Field(default=64, ge=8, description="its width")
    depth: int = Field(default=2, ge=1, description="self-attention blocks over both frames' patches")
    heads: int = Field(default=4, ge=1)
    patch_size: int = Field(
        default=8, ge=1, description="pixels per patch side (image_size must be a multiple)"
    )
    grid: int = Field(
        default=2, ge=1, description="the current frame's patches pooled to grid x grid tokens per camera"
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SpatialEncoderConfig:
        if self.dim % self.heads:
            raise ValueError(f"spatial_encoder.dim {self.dim} is not a multiple of its heads {self.heads}")
        return self


class BackboneConfig(_Section):
    """Vision tower (transformers SiglipVisionConfig kwargs) + projector + language model with LoRA.

    `kind` picks the language model: 'vlm' (default) a Qwen2 LM (`llm` holds Qwen2Config kwargs) reading
    [vision | instruction | ActionQuery tokens], bridge = hidden states of `bridge_layers` at the vision and query
    positions; 'mamba' a Mamba state-space model (`llm` holds MambaConfig kwargs) reading AnoleVLA's order
    [state | state delta | vision | instruction], bridge = the final hidden state of the last instruction token
    (num_queries, bridge_layers and bridge are not used).

    `bridge` says how the head reads the layers: 'concat' (every head block cross-attends to all of them, one
    token sequence; with bridge_layers [-1] the last-layer bridge) or 'layers' (VLA-Adapter's layer-wise bridge:
    head block i cross-attends to layer bridge_layers[i] alone, so bridge_layers has one entry per head block).

    `vision_path` / `llm_path`, when set, are local Hugging Face-format directories (config.json +
    model.safetensors, as `huggingface-cli download` writes them: a SigLIP model or its vision tower, a Qwen2 LM
    with or without its LM head) that training starts from, never a hub download; `vision` / `llm` may then be
    left empty (the directory's config.json gives the sizes). The tokenizer defaults to the LM directory's
    tokenizer.json, or 'bytes' for random towers. A saved checkpoint holds every weight, both towers' sizes and
    its tokenizer.json, so loading it never needs those directories. The legacy `pretrained_dir` (a directory
    holding `vision/` and `llm/`) reads as the two paths.
    """

    kind: Literal["vlm", "mamba"] = "vlm"
    vision: dict[str, Any] = Field(default_factory=dict)
    llm: dict[str, Any] = Field(default_factory=dict)
    vision_path: str | None = None
    llm_path: str | None = None
    vision_training: Literal["frozen", "full"] = Field(
        default="frozen",
        description="'full': stage 1 trains the vision tower's weights too (a small tower trained from scratch, or "
        "a pretrained one adapted to the robot's cameras); 'frozen': it keeps its weights",
    )
    llm_training: Literal["lora", "full"] = Field(
        default="lora",
        description="'lora': LoRA adapters on lora_targets train, the LM's own weights stay; 'full': every LM "
        "weight trains and no adapter is added (AnoleVLA fine-tunes its Mamba this way)",
    )
    lora_rank: int = Field(default=64, ge=1)
    lora_alpha: int = Field(default=128, ge=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    num_queries: int = Field(default=64, ge=1, description="learnable ActionQuery tokens")
    bridge_layers: list[int] = Field(
        default_factory=lambda: [-1], min_length=1, description="LM layers whose hidden states feed the head"
    )
    bridge: Literal["concat", "layers"] = Field(
        default="concat", description="'concat': all layers to every head block; 'layers': one per block"
    )
    token_order: Literal["vision_first", "instruction_first"] = Field(
        default="vision_first",
        description="the VLM's sequence: [vision | instruction | queries], or [instruction | vision | queries], "
        "where the instruction's keys and values do not depend on the images and are computed once per episode "
        "(VLABackbone.instruction_cache); a checkpoint runs in the order it was trained in",
    )
    num_images: int = Field(default=2, ge=1)
    anchor_image: bool = Field(
        default=False,
        description="AnchorVLA4D: each camera's first frame of the episode goes in beside the current one "
        "(the tower then sees 2 * num_images images: current cameras, then their anchors)",
    )
    spatial_encoder: SpatialEncoderConfig | None = Field(
        default=None,
        description="AnchorVLA4D's spatial encoder over each camera's current frame and anchor image (needs "
        "anchor_image); None: none",
    )
    max_instruction_tokens: int = Field(default=32, ge=1)
    tokenizer: str = Field(
        default="",
        description="'bytes' (our byte-level tokenizer), a local tokenizer dir or tokenizer.json; "
        "empty: llm_path's, else 'bytes'",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_pretrained_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pretrained_dir" in data:
            data = dict(data)
            root = data.pop("pretrained_dir")
            if root is not None:
                data.setdefault("vision_path", str(Path(root) / "vision"))
                data.setdefault("llm_path", str(Path(root) / "llm"))
        return data

    @model_validator(mode="after")
    def _sizes_or_paths(self) -> BackboneConfig:
        for part in ("vision", "llm"):
            if not getattr(self, part) and getattr(self, f"{part}_path") is None:
                raise ValueError(
                    f"backbone.{part} (its sizes) or backbone.{part}_path (a local directory) is needed"
                )
        if self.bridge == "layers" and self.kind != "vlm":
            raise ValueError("backbone.bridge 'layers' needs backbone.kind 'vlm'")
        if self.spatial_encoder is not None and not self.anchor_image:
            raise ValueError(
                "backbone.spatial_encoder reads the anchor image beside the current one: set backbone.anchor_image"
            )
        if not self.tokenizer:
            self.tokenizer = self.llm_path or "bytes"
        return self

    @property
    def images_per_observation(self) -> int:
        """Images the vision tower reads per observation: the cameras, and their anchors when kept."""
        return self.num_images * (2 if self.anchor_image else 1)


class HeadConfig(_Section):
    """The action head. `mode` selects how it is trained and sampled (the ablation's variants): the DiT as
    anchored (truncated diffusion from the M anchors, scored), diffusion (plain, from noise), regression (L1); or
    linear (AnoleVLA: one linear layer from the bridge's last token, L1; dim/depth/heads/anchors unused)."""

    mode: Literal["anchored", "diffusion", "regression", "linear"] = "anchored"
    horizon: int = Field(ge=1, description="H, actions per chunk")
    action_dim: int = Field(ge=1)
    proprio_dim: int = Field(ge=1)
    cond_dim: int = Field(ge=1, description="width of the bridge features the head cross-attends to")
    dim: int = Field(default=128, ge=8)
    actions_per_token: int = Field(
        default=1, ge=1, description="consecutive actions the DiT reads as one token"
    )
    depth: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    num_anchors: int = Field(default=20, ge=1, description="M")
    schedule_steps: int = Field(default=100, ge=2, description="S, the training noise schedule length")
    truncation_ratio: float = Field(default=0.1, gt=0, le=1, description="rho; S_tr = max(1, round(rho*S))")
    beta_schedule: str = "squaredcos_cap_v2"
    inference_steps: int = Field(default=10, ge=1, description="denoising steps at inference")

    @model_validator(mode="after")
    def _tokens_divide_horizon(self) -> HeadConfig:
        if self.horizon % self.actions_per_token:
            raise ValueError(
                f"horizon {self.horizon} is not a multiple of actions_per_token {self.actions_per_token}"
            )
        return self

    @property
    def truncated_steps(self) -> int:
        return max(1, round(self.truncation_ratio * self.schedule_steps))


class GripperHeadConfig(_Section):
    """AnchorRefine's discrete gripper decision on top of the plan (policy_runtime/model/gripper.py): one
    open/close logit per chunk step (positive: closed) and a learned margin that sets the fast loop's hysteresis
    band. Labels: the demonstrated gripper action below the middle of its range counts as closed (the SO-101
    gripper closes toward low values)."""

    channel_index: int = Field(ge=0, description="the gripper's column in the action layout")
    hidden: int = Field(default=64, ge=4)
    margin_weight: float = Field(default=0.5, ge=0, description="weight of the margin term in the loss")
    band_quantile: float = Field(
        default=0.1, gt=0, lt=1, description="share of training steps the learned band settles to cover"
    )
    open_follows_plan: bool = Field(
        default=False,
        description="while the decision is 'open' the plan's gripper channel runs (the head only commits the "
        "closing); False: the open goal replaces it",
    )


class ResidualConfig(_Section):
    hidden: int = Field(default=120, ge=4)
    step_embedding: int = Field(default=32, ge=2, description="width of the sinusoidal embedding of j")


class ArchitectureConfig(_Section):
    backbone: BackboneConfig | None = Field(
        default=None, description="None: the head reads proprio features only"
    )
    head: HeadConfig
    residual: ResidualConfig = Field(default_factory=ResidualConfig)
    gripper_head: GripperHeadConfig | None = Field(
        default=None,
        description="AnchorRefine's discrete gripper head (None: the plan's gripper channel runs)",
    )
    goal_probe: bool = Field(
        default=False,
        description="a training-only head that predicts the goal's position from the ActionQuery tokens "
        "(`anchorvla train --goal-probe`), so the backbone must find the named target in the images; not exported",
    )
    image_size: int = 224
    image_mean: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])

    @model_validator(mode="after")
    def _spatial_grid_fits_the_images(self) -> ArchitectureConfig:
        spatial = self.backbone.spatial_encoder if self.backbone is not None else None
        if spatial is not None:
            side = self.image_size // spatial.patch_size
            if self.image_size % spatial.patch_size or side % spatial.grid:
                raise ValueError(
                    f"spatial_encoder: image_size {self.image_size} must be patch_size {spatial.patch_size} x a "
                    f"multiple of grid {spatial.grid}"
                )
        return self

    @model_validator(mode="after")
    def _goal_probe_reads_queries(self) -> ArchitectureConfig:
        if self.goal_probe and (self.backbone is None or self.backbone.kind != "vlm"):
            raise ValueError("goal_probe reads the ActionQuery tokens: it needs backbone.kind 'vlm'")
        return self

    @model_validator(mode="after")
    def _bridge_fits_the_head(self) -> ArchitectureConfig:
        bb = self.backbone
        if bb is not None and bb.bridge == "layers":
            if self.head.mode == "linear":
                raise ValueError("backbone.bridge 'layers' needs a DiT head (head.mode is 'linear')")
            if len(bb.bridge_layers) != self.head.depth:
                raise ValueError(
                    f"backbone.bridge 'layers' gives each head block one LM layer: bridge_layers has "
                    f"{len(bb.bridge_layers)} entries, head.depth is {self.head.depth}"
                )
        return self


class Normalization(_Section):
    """Actions map to [-1, 1] per channel by [low, high]; proprio is standardised by mean/std; the state delta
    (proprio minus the previous tick's, `policy_runtime/preprocess.py`) is divided by its std when the backbone
    reads it (None: the policy does not use it)."""

    action_low: list[float]
    action_high: list[float]
    proprio_mean: list[float]
    proprio_std: list[float]
    proprio_delta_std: list[float] | None = None


class AnchorsMeta(_Section):
    count: int
    horizon: int
    cluster_sizes: list[int] = Field(default_factory=list)
    coverage_l1: float | None = Field(
        default=None, description="mean per-element L1 from a chunk to its nearest anchor"
    )
    source: str = ""


class CheckpointConfig(_Section):
    format_version: int = FORMAT_VERSION
    architecture: ArchitectureConfig
    action_layout: list[str]
    proprio_layout: list[str]
    cameras: list[str] = Field(default_factory=list)
    dt_s: float = Field(default=1 / 15, gt=0)
    normalization: Normalization
    anchors: AnchorsMeta | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> CheckpointConfig:
        if not path.is_file():
            raise UserError(
                f"{path} not found: a checkpoint directory holds config.json and model.safetensors"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); re-save the checkpoint") from None
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{path}: {where}: {first['msg']}") from None
        if config.format_version != FORMAT_VERSION:
            raise UserError(
                f"{path}: checkpoint format {config.format_version}, this build reads {FORMAT_VERSION}"
            )
        return config
