"""AnoleVLA's stage-2 "acceleration loss": L1 between the first differences (along the chunk) of the predicted and
the demonstrated actions. Added with weight lambda to a head's loss, it penalises step-to-step changes the
demonstration does not have, so the planned motion is smoother. Every head adds it the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def action_difference_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (B, H, d) -> mean |(pred[k+1] - pred[k]) - (target[k+1] - target[k])|; 0 when H == 1."""
    if pred.shape[-2] < 2:
        return pred.sum() * 0
    return F.l1_loss(pred.diff(dim=-2), target.diff(dim=-2))
