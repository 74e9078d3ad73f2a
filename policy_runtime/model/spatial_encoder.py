"""AnchorVLA4D's spatial encoder: a lightweight transformer that reads each camera's current frame and its anchor
image (the episode's first frame, `backbone.anchor_image`) jointly, so its tokens can expose how the scene moved
within the episode, which the 2D vision tower seeing one image at a time cannot.

Per camera: both frames are cut into patches by one shared patch embedding, each patch gets its position and its
frame's embedding (current or anchor), and `depth` pre-norm blocks of self-attention run over the two frames'
tokens as one sequence (every patch attends to every patch of both frames). The current frame's tokens are then
average-pooled to a `grid` x `grid` grid and projected to the LM's width: grid**2 spatial tokens per camera, which
the LM reads right after the vision tower's tokens (`image_tokens`), so both the VLM's bridge (taken at the vision
positions) and the Mamba's recurrence see them.

The paper's encoder is a frozen pretrained one; there is none to load offline here, so this one trains from
random weights in stage 1 with the projector. It reads the images the vision tower reads (the same preprocessing):
the exported backbone graph keeps its inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from policy_runtime.model.config import SpatialEncoderConfig


class _Block(nn.Module):
    """Pre-norm self-attention + MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class SpatialEncoder(nn.Module):
    def __init__(self, config: SpatialEncoderConfig, image_size: int, num_cameras: int, out_dim: int):
        super().__init__()
        self.config = config
        self.num_cameras = num_cameras
        self.side = image_size // config.patch_size  # patches per side
        dim = config.dim
        self.patch_embed = nn.Conv2d(3, dim, config.patch_size, stride=config.patch_size)
        self.position = nn.Parameter(torch.randn(1, self.side * self.side, dim) * 0.02)
        self.frame = nn.Parameter(torch.randn(2, 1, dim) * 0.02)  # current, anchor
        self.blocks = nn.ModuleList(_Block(dim, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, out_dim)

    @property
    def tokens_per_camera(self) -> int:
        return self.config.grid**2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 2 * cameras, 3, S, S): the current frames, then the anchors (`policy_images`' order) ->
        spatial tokens (B, cameras * grid**2, out_dim)."""
        b, n, d, side, grid = images.shape[0], self.num_cameras, self.config.dim, self.side, self.config.grid
        pairs = torch.stack([images[:, :n], images[:, n:]], dim=2).flatten(0, 2)  # (B*n*2, 3, S, S)
        tokens = self.patch_embed(pairs).flatten(2).transpose(1, 2) + self.position  # (B*n*2, side^2, d)
        tokens = tokens.reshape(b * n, 2, side * side, d) + self.frame
        tokens = tokens.reshape(b * n, 2 * side * side, d)
        for block in self.blocks:
            tokens = block(tokens)
        current = self.norm(tokens[:, : side * side])
        cell = side // grid
        pooled = current.reshape(b * n, grid, cell, grid, cell, d).mean(dim=(2, 4))  # (B*n, grid, grid, d)
        return self.out(pooled.reshape(b, n * grid * grid, d))


def image_tokens(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The image tokens a backbone's LM reads: the vision tower's patches of every image through the projector,
    then, with a spatial encoder (`backbone.spatial`), its tokens: (B, tokens, hidden)."""
    b = images.shape[0]
    patches = backbone.vision(pixel_values=images.flatten(0, 1)).last_hidden_state
    tokens = backbone.projector(patches).reshape(b, -1, backbone.hidden_size)
    if backbone.spatial is None:
        return tokens
    return torch.cat([tokens, backbone.spatial(images)], dim=1)


def build_spatial(config, image_size: int, hidden: int) -> SpatialEncoder | None:
    """The backbone's spatial encoder from its BackboneConfig, or None when it has none."""
    if config.spatial_encoder is None:
        return None
    return SpatialEncoder(config.spatial_encoder, image_size, config.num_images, hidden)
