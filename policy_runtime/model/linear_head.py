"""AnoleVLA's action head: one linear layer from the bridge's last token to the whole chunk, trained with L1.

Same interface as `AnchoredDiffusionHead` (`sample`, `loss`, `noise_shape`), so the policy, the trainer and the
exporter treat both alike: it takes no noise and no proprio (they are inputs of the call, unused; the exported
graph drops them), and returns a single candidate with index 0 and score 0. The residual's context is the last
token itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policy_runtime.model.config import HeadConfig
from policy_runtime.model.smoothness import SmoothnessWeights, smoothness_loss


class LinearHead(nn.Module):
    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.cond_dim)
        self.out = nn.Linear(config.cond_dim, config.horizon * config.action_dim)

    @property
    def context_dim(self) -> int:
        return self.config.cond_dim

    def noise_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 1, self.config.horizon, self.config.action_dim)

    def predict(self, cond: torch.Tensor) -> torch.Tensor:
        """cond (B, N, cond_dim) -> the chunk (B, H, d) in normalised units, unclamped."""
        b = cond.shape[0]
        return self.out(self.norm(cond[:, -1])).reshape(b, self.config.horizon, self.config.action_dim)

    def sample(
        self,
        cond: torch.Tensor,
        proprio: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chunk (B, H, d), index (B,) zeros, scores (B, 1) zeros, candidates (B, 1, H, d), context (B, C))."""
        chunk = self.predict(cond).clamp(-1.0, 1.0)
        zero = chunk[:, 0, 0] * 0
        return chunk, zero.long(), zero[:, None], chunk[:, None], cond[:, -1]

    def loss(
        self,
        cond: torch.Tensor,
        proprio: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        smoothness: SmoothnessWeights | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 on the chunk (AnoleVLA's stage 1) + the weighted velocity and acceleration terms (its stage 2)."""
        pred = self.predict(cond)
        recon = F.l1_loss(pred, target)
        logs = {"recon": float(recon.detach())}
        if not smoothness:
            return recon, logs
        smooth, smooth_logs = smoothness_loss(pred, target, smoothness)
        return recon + smooth, {**logs, **smooth_logs}
