"""The checkpoint directory: `config.json` (CheckpointConfig), `model.safetensors` (backbone incl. LoRA, head incl.
the anchors buffer), `residual.safetensors` (the residual module) and, for a Hugging Face tokenizer,
`tokenizer.json`. Weights load through safetensors only, never unpickled. A checkpoint trained from local
pretrained towers is self-contained: it holds their sizes and weights, so loading it never reads those
directories."""

from __future__ import annotations

from pathlib import Path

import torch

from anchorvla.errors import UserError
from policy_runtime.model.backbone import tower_sizes
from policy_runtime.model.config import CheckpointConfig
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.tokenizer import TOKENIZER_FILE, LocalTokenizer

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
RESIDUAL_FILE = "residual.safetensors"


def _split_state(policy: AnchorVLAPolicy) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    main, residual = {}, {}
    for name, tensor in policy.state_dict().items():
        if name.startswith("residual."):
            residual[name.removeprefix("residual.")] = tensor.detach().contiguous().cpu()
        else:
            main[name] = tensor.detach().contiguous().cpu()
    return main, residual


def save_checkpoint(directory: Path, policy: AnchorVLAPolicy, config: CheckpointConfig) -> Path:
    """Write the three files (the directory is created); returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    main, residual = _split_state(policy)
    save_file(main, str(directory / MODEL_FILE), metadata={"format": "pt"})
    save_file(residual, str(directory / RESIDUAL_FILE), metadata={"format": "pt"})
    _self_contained(directory, policy, config).write(directory / CONFIG_FILE)
    return directory


def _self_contained(directory: Path, policy: AnchorVLAPolicy, config: CheckpointConfig) -> CheckpointConfig:
    """`config` with the sizes of towers loaded from local directories and the tokenizer as the checkpoint's own
    tokenizer.json (written here); the directories stay in it as provenance, unread by `load_checkpoint`."""
    bb = config.architecture.backbone
    if bb is None or policy.backbone is None:
        return config
    update = {}
    if bb.vision_path is not None:
        update["vision"] = tower_sizes(policy.backbone.vision)
    if bb.llm_path is not None:
        update["llm"] = tower_sizes(policy.backbone.llm)
    if isinstance(policy.tokenizer, LocalTokenizer):
        policy.tokenizer.save(directory / TOKENIZER_FILE)
        update["tokenizer"] = TOKENIZER_FILE
    arch = config.architecture.model_copy(update={"backbone": bb.model_copy(update=update)})
    return config.model_copy(update={"architecture": arch})


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path} not found: the checkpoint is incomplete")
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from None


def _first_problem(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else lines[0]


def load_checkpoint(directory: Path, with_residual: bool = True) -> tuple[AnchorVLAPolicy, CheckpointConfig]:
    """Build the policy from config.json and load its weights (eval mode). A missing residual file is an error
    only when `with_residual`. The returned config names the tokenizer by a path that resolves from anywhere
    (a relative one is the checkpoint's own file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory {directory} not found")
    config = CheckpointConfig.read(directory / CONFIG_FILE)
    arch = config.architecture
    if arch.backbone is not None:
        bb = arch.backbone
        tokenizer = bb.tokenizer if bb.tokenizer == "bytes" else str(directory / bb.tokenizer)
        arch = arch.model_copy(update={"backbone": bb.model_copy(update={"tokenizer": tokenizer})})
        config = config.model_copy(update={"architecture": arch})
        towers = arch.backbone.model_copy(update={"vision_path": None, "llm_path": None})
        arch = arch.model_copy(update={"backbone": towers})
    policy = AnchorVLAPolicy(arch)
    main = _read_weights(directory / MODEL_FILE)
    try:
        missing, unexpected = policy.load_state_dict(main, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise UserError(
            f"{directory / MODEL_FILE} does not match config.json ({_first_problem(exc)})"
        ) from None
    missing = [m for m in missing if not m.startswith("residual.")]
    if missing or unexpected:
        raise UserError(
            f"{directory / MODEL_FILE} does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if with_residual:
        residual = _read_weights(directory / RESIDUAL_FILE)
        try:
            policy.residual.load_state_dict(residual, strict=True)
        except RuntimeError as exc:
            raise UserError(
                f"{directory / RESIDUAL_FILE} does not match config.json ({_first_problem(exc)})"
            ) from None
    policy.eval()
    return policy, config
