"""Sinusoidal embeddings shared by the head (diffusion timestep) and the residual (step index j in the chunk)."""

from __future__ import annotations

import math

import torch


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(N,) integer or float positions -> (N, dim) [sin | cos] features (the usual transformer/DDPM embedding)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )
    angles = positions.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
