"""The checkpoint directory: `config.json` (CheckpointConfig), `model.safetensors` (backbone incl. LoRA, head incl.
the anchors buffer) and `residual.safetensors` (the residual module). Weights load through safetensors only,
never unpickled."""

from __future__ import annotations

from pathlib import Path

import torch

from anchorvla.errors import UserError
from policy_runtime.model.config import CheckpointConfig
from policy_runtime.model.policy import AnchorVLAPolicy

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
    config.write(directory / CONFIG_FILE)
    return directory


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
    only when `with_residual`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"checkpoint directory {directory} not found")
    config = CheckpointConfig.read(directory / CONFIG_FILE)
    arch = config.architecture
    if arch.backbone is not None and arch.backbone.pretrained_dir is not None:
        arch = arch.model_copy(update={"backbone": arch.backbone.model_copy(update={"pretrained_dir": None})})
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
