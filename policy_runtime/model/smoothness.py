"""AnoleVLA's smoothness terms (its stage 2): L1 between the velocities of the predicted and the demonstrated
chunk, and between their accelerations, each with its own weight, added to a head's loss.

AnoleVLA's actions are end-effector velocities, so its L_vel is an L1 on the actions and its L_acc an L1 on their
first differences (tau = 2..H). Ours are joint targets (positions), so the same two quantities are one difference
higher: the velocity is the first difference of the chunk continuing from the current state, v[1] = a[1] - s,
v[tau] = a[tau] - a[tau-1] (H terms, as L_vel has), and the acceleration the difference of those velocities for
tau = 2..H (H - 1 terms, as L_acc has; its first term, a[2] - 2 a[1] + s, reaches back to the state). The base
channels, velocity commands already, get the same differences (so for them the terms are one order higher).

The state s is the same for the prediction and the demonstration, so it cancels in every term: the terms are the
differences of the error e = pred - target continued from e[0] = 0, and no state needs to be passed (nor mapped
from proprio units to action units).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SmoothnessWeights:
    """The weights of the velocity and the acceleration term (0: the term is left out)."""

    velocity: float = 0.0
    acceleration: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.velocity or self.acceleration)


def velocity_acceleration_l1(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, target (B, H, d) chunks starting at the current state -> (mean |v_pred - v_target| over the H
    velocities, mean |acc_pred - acc_target| over the H - 1 accelerations; 0 when H == 1)."""
    error = pred - target
    continued = torch.cat([torch.zeros_like(error[..., :1, :]), error], dim=-2)  # e[0] = s - s = 0
    velocity = continued.diff(dim=-2)
    acceleration = velocity.diff(dim=-2)
    acc = acceleration.abs().mean() if acceleration.shape[-2] else pred.sum() * 0
    return velocity.abs().mean(), acc


def smoothness_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: SmoothnessWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the two terms and their values for the logs ('vel', 'acc')."""
    vel, acc = velocity_acceleration_l1(pred, target)
    total = weights.velocity * vel + weights.acceleration * acc
    return total, {"vel": float(vel.detach()), "acc": float(acc.detach())}
