"""The residual correction MLP: a_j = a_hat_j + r(proprio_now, context, a_hat_j, j).

`context` is the small pooled vector the head cached from the last backbone call (it carries the observation and
the instruction); `j` is the index of the action in its chunk, fed through a 1-D sinusoidal embedding. No history.
At the paper's sizes (13-D action, head width 256, 40-D proprio, hidden 120) it holds about 57K parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from policy_runtime.model.config import ResidualConfig
from policy_runtime.model.embeddings import sinusoidal_embedding


class ResidualModule(nn.Module):
    def __init__(self, config: ResidualConfig, proprio_dim: int, context_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        width = proprio_dim + context_dim + action_dim + config.step_embedding
        self.mlp = nn.Sequential(
            nn.Linear(width, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, config.hidden),
            nn.SiLU(),
            nn.Linear(config.hidden, action_dim),
        )
        # Start as the identity correction so an untrained residual changes nothing.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(
        self, proprio: torch.Tensor, context: torch.Tensor, planned: torch.Tensor, j: torch.Tensor
    ) -> torch.Tensor:
        """proprio (B, P) normalised, context (B, C), planned (B, d) normalised, j (B,) -> correction (B, d)."""
        step = sinusoidal_embedding(j, self.config.step_embedding)
        return self.mlp(torch.cat([proprio, context, planned, step], dim=-1))
