"""AnchorRefine's gripper refinement: a discrete open/close decision on top of the plan.

The head reads what the residual reads from the plan (the pooled context of the backbone call, the proprio now) and
the planned chunk itself, and gives one logit per chunk step: positive means 'closed'. Its learned `margin` is the
half-width of the band the fast loop's hysteresis keeps around the boundary (onboard/gripper.py): the decision
switches to closed only above +margin and back to open only below -margin.

Loss (`gripper_loss`): binary cross-entropy against the demonstrated gripper action thresholded at the middle of
its range (normalised < 0: closed), plus a margin term `w * (mean(relu(m - y*l)) - q*m)` with y = +-1 and the
logits l held fixed in it. Its gradient in m is w * (P(y*l < m) - q), so the margin settles where a share q
(`band_quantile`) of the training steps' logits lie inside the band or on the wrong side (the ambiguous steps at
a switch); the logits themselves learn from the cross-entropy alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policy_runtime.model.config import GripperHeadConfig, HeadConfig


class GripperHead(nn.Module):
    def __init__(self, config: GripperHeadConfig, head: HeadConfig):
        super().__init__()
        self.config = config
        width = head.dim + head.proprio_dim + head.horizon * head.action_dim
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, head.horizon),
        )
        self.raw_margin = nn.Parameter(torch.tensor(0.5413))  # softplus -> 1.0

    @property
    def margin(self) -> torch.Tensor:
        """The hysteresis band's half-width in logit units (> 0)."""
        return F.softplus(self.raw_margin)

    def forward(self, context: torch.Tensor, proprio: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """context (B, C), proprio (B, P) normalised, planned chunk (B, H, d) normalised -> logits (B, H)."""
        return self.mlp(torch.cat([context, proprio, chunk.flatten(1)], dim=-1))


def closed_labels(gripper_actions: torch.Tensor) -> torch.Tensor:
    """Demonstrated gripper actions in normalised units ([-1, 1]) -> 1.0 where closed (below the middle)."""
    return (gripper_actions < 0).float()


def gripper_loss(
    logits: torch.Tensor, margin: torch.Tensor, gripper_actions: torch.Tensor, config: GripperHeadConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """logits (B, H), margin scalar, gripper_actions (B, H) normalised -> (loss, logs)."""
    labels = closed_labels(gripper_actions)
    bce = F.binary_cross_entropy_with_logits(logits, labels)
    signed = (2 * labels - 1) * logits
    # The margin learns from the logits without shaping them: a hinge on the logits would pin every ambiguous
    # step's logit at the band's edge on its majority side, where the hysteresis can never cross the band.
    margin_term = F.relu(margin - signed.detach()).mean() - config.band_quantile * margin
    total = bce + config.margin_weight * margin_term
    return total, {
        "grip_bce": float(bce.detach()),
        "grip_acc": float((signed > 0).float().mean()),
        "grip_margin": float(margin.detach()),
    }
