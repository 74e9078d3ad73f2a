"""The anchored truncated diffusion head: a DiT denoiser over all M anchors as one batch, the truncated DDIM-style
schedule, and the scoring head that picks the chunk.

Everything in `sample` is a plain torch loop over a step count fixed when the module is called (a Python int), with
the noise an explicit input and the schedule constants precomputed as buffers, so the whole denoising loop exports
to ONNX as one graph. The network predicts the clean chunk (as DiffusionDrive does); DDIM steps derive the noise
estimate from it. The same network also serves the ablation's baselines (`HeadConfig.mode`): plain diffusion from
noise over the full schedule, and direct L1 regression.

Real-time chunking (`sample`'s prefix): the first actions of the next chunk are the ones the robot runs while it is
computed. They are in-painted into every candidate during the truncated denoising steps, and the scoring prefers
candidates that agree with them, so the chunk continues what runs instead of jumping away from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policy_runtime.model.config import HeadConfig
from policy_runtime.model.embeddings import sinusoidal_embedding
from policy_runtime.model.smoothness import SmoothnessWeights, smoothness_loss


def make_alphas_cumprod(steps: int, beta_schedule: str) -> torch.Tensor:
    """abar_t for t in [0, S) from diffusers' DDPM scheduler (constants only; no diffusers object at run time)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=steps, beta_schedule=beta_schedule)
    return scheduler.alphas_cumprod.detach().clone().float()


def step_timesteps(start: int, num_steps: int) -> list[int]:
    """`num_steps` timesteps evenly spaced from `start` down to 0 (fewer when there are not that many)."""
    num_steps = max(1, min(num_steps, start + 1))
    if num_steps == 1:
        return [start]
    return [round(start - i * start / (num_steps - 1)) for i in range(num_steps)]


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """Self-attention over the chunk's steps, cross-attention to the bridge features, MLP; AdaLN-Zero from `c`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, memory: torch.Tensor, candidates: int
    ) -> torch.Tensor:
        """x (B*K, T, dim) tokens of K candidates per observation; c (B, dim) and memory (B, N, dim) conditions.
        The modulation is computed once per observation and shared by its K candidates; so are the keys and
        values of the cross-attention: the K candidates' queries attend to their observation's memory as one
        sequence of K*T queries (each query's output depends on itself and the memory only, so this equals K
        separate attentions, without projecting the memory K times)."""
        mods = self.modulation(c).repeat_interleave(candidates, dim=0)
        s1, sc1, g1, s2, sc2, g2, s3, sc3, g3 = mods.chunk(9, dim=-1)
        h = _modulate(self.norm1(x), s1, sc1)
        x = x + g1[:, None, :] * self.self_attn(h, h, h, need_weights=False)[0]
        h = _modulate(self.norm2(x), s2, sc2)
        bk, t, dim = h.shape
        queries = h.reshape(bk // candidates, candidates * t, dim)
        attended = self.cross_attn(queries, memory, memory, need_weights=False)[0].reshape(bk, t, dim)
        x = x + g2[:, None, :] * attended
        h = _modulate(self.norm3(x), s3, sc3)
        return x + g3[:, None, :] * self.mlp(h)


class AnchoredDiffusionHead(nn.Module):
    """Denoises K candidate chunks per observation in one batch and scores each.

    Inputs everywhere: `cond` bridge features, `proprio` (B, proprio_dim) normalised proprio. `cond` is
    (B, N, cond_dim), which every block cross-attends to, or, from the layer-wise bridge, (B, depth, N, cond_dim):
    block i cross-attends to cond[:, i] (VLA-Adapter).
    Chunks are (B, K, H, action_dim) in normalised action units ([-1, 1]).
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        d, dim, per_token = config.action_dim, config.dim, config.actions_per_token
        self.action_in = nn.Linear(d * per_token, dim)
        self.step_pos = nn.Parameter(torch.zeros(1, config.horizon // per_token, dim))
        nn.init.normal_(self.step_pos, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.proprio_mlp = nn.Sequential(nn.Linear(config.proprio_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cond_in = nn.Sequential(nn.LayerNorm(config.cond_dim), nn.Linear(config.cond_dim, dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, config.heads) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        nn.init.zeros_(self.final_modulation[1].weight)
        nn.init.zeros_(self.final_modulation[1].bias)
        self.action_out = nn.Linear(dim, d * per_token)
        self.score_mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, 1))
        self.register_buffer("anchors", torch.zeros(config.num_anchors, config.horizon, d))
        abar = make_alphas_cumprod(config.schedule_steps, config.beta_schedule)
        self.register_buffer("alphas_cumprod", abar, persistent=False)

    @property
    def context_dim(self) -> int:
        """Width of the pooled context the residual reads."""
        return self.config.dim

    # -- one network evaluation ---------------------------------------------------------------------------------
    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Bridge features projected to the head's width: (B, N, dim) or (B, depth, N, dim). Once per chunk."""
        return self.cond_in(cond)

    def pooled_context(self, memory: torch.Tensor) -> torch.Tensor:
        """The small vector the residual gets from the last backbone call: mean of the projected bridge, (B, dim)."""
        return memory.flatten(1, -2).mean(dim=1)

    def denoise(
        self, x: torch.Tensor, t: torch.Tensor, memory: torch.Tensor, proprio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, K, H, d), t (B,) integer timesteps -> predicted clean chunks (B, K, H, d) and scores (B, K)."""
        b, k, h, d = x.shape
        dim = self.config.dim
        c = self.time_mlp(sinusoidal_embedding(t, dim)) + self.proprio_mlp(proprio)  # (B, dim)
        n_tokens = h // self.config.actions_per_token
        tokens = self.action_in(x.reshape(b * k, n_tokens, -1)) + self.step_pos
        per_block = memory.unbind(1) if memory.dim() == 4 else [memory] * len(self.blocks)
        for block, block_memory in zip(self.blocks, per_block, strict=True):
            tokens = block(tokens, c, block_memory, k)
        shift, scale = self.final_modulation(c).repeat_interleave(k, dim=0).chunk(2, dim=-1)
        tokens = _modulate(self.final_norm(tokens), shift, scale)
        x0 = self.action_out(tokens).reshape(b, k, h, d)
        c_all = c[:, None, :].expand(b, k, dim).reshape(b * k, dim)
        scores = self.score_mlp(torch.cat([tokens.mean(dim=1), c_all], dim=-1)).reshape(b, k)
        return x0, scores

    # -- sampling -----------------------------------------------------------------------------------------------
    def sample_timesteps(self, num_steps: int | None = None) -> list[int]:
        cfg = self.config
        steps = cfg.inference_steps if num_steps is None else num_steps
        if cfg.mode == "regression":
            return [0]
        start = cfg.truncated_steps - 1 if cfg.mode == "anchored" else cfg.schedule_steps - 1
        return step_timesteps(start, steps)

    def noise_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of the `noise` input of `sample` (one candidate per anchor, or one for plain diffusion)."""
        k = self.config.num_anchors if self.config.mode == "anchored" else 1
        return (batch, k, self.config.horizon, self.config.action_dim)

    def sample(
        self,
        cond: torch.Tensor,
        proprio: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int | None = None,
        prefix: torch.Tensor | None = None,
        prefix_length: torch.Tensor | None = None,
        prefix_score_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the fixed-length denoising loop.

        With a prefix (real-time chunking; anchored mode): `prefix` (B, H, d) normalised actions, of which the first
        `prefix_length` (B,) integer steps are the ones that run before this chunk takes over. After the first network
        call every candidate's sample holds, on those steps, the prefix noised to the step's level with the
        candidate's own noise, and each step's clean estimate holds the prefix itself, so the chunk reproduces the
        prefix exactly and the later steps are denoised knowing it. The first call sees the candidates as they are:
        the mean L1 distance of its clean estimate from the prefix on the prefix steps is how far a candidate would
        have gone elsewhere, and `prefix_score_weight` (B,) times it is taken off the candidate's score. A
        `prefix_length` of 0 gives the same chunk and scores as no prefix.

        Returns (chunk (B, H, d), index (B,), scores (B, K), candidates (B, K, H, d), context (B, dim)).
        """
        memory = self.encode_condition(cond)
        timesteps = self.sample_timesteps(num_steps)
        abar = self.alphas_cumprod
        b = proprio.shape[0]
        if self.config.mode == "anchored":
            a0 = abar[timesteps[0]]
            x = a0.sqrt() * self.anchors[None] + (1 - a0).sqrt() * noise
        elif self.config.mode == "diffusion":
            x = noise
        else:
            x = torch.zeros_like(noise)
        mask = None
        if prefix is not None:
            if self.config.mode != "anchored" or prefix_length is None:
                raise ValueError("a prefix needs the anchored head and its prefix_length")
            steps = torch.arange(self.config.horizon, device=x.device)
            mask = (steps[None, :] < prefix_length[:, None]).to(x.dtype)[:, None, :, None]  # (B, 1, H, 1)
            prefix = prefix[:, None]  # (B, 1, H, d): the same for every candidate
        x0 = x
        scores = torch.zeros(noise.shape[:2], dtype=x.dtype, device=x.device)
        penalty = None
        for i, t in enumerate(timesteps):
            t_vec = torch.full((b,), t, dtype=torch.long, device=x.device)
            x0, scores = self.denoise(x, t_vec, memory, proprio)
            x0 = x0.clamp(-1.0, 1.0)
            if mask is not None:
                if i == 0:
                    per_step = (x0 - prefix).abs().mean(dim=-1, keepdim=True) * mask
                    penalty = per_step.sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp(min=1.0)  # (B, K)
                    a_t = abar[t]
                    x = x + mask * (a_t.sqrt() * prefix + (1 - a_t).sqrt() * noise - x)
                x0 = x0 + mask * (prefix - x0)
            if i + 1 < len(timesteps):
                a_t, a_next = abar[t], abar[timesteps[i + 1]]
                eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
                x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        if penalty is not None and prefix_score_weight is not None:
            scores = scores - prefix_score_weight[:, None] * penalty
        index = scores.argmax(dim=1)
        chunk = torch.gather(x0, 1, index[:, None, None, None].expand(b, 1, *x0.shape[2:])).squeeze(1)
        return chunk, index, scores, x0, self.pooled_context(memory)

    # -- training -----------------------------------------------------------------------------------------------
    def nearest_anchor(self, target: torch.Tensor) -> torch.Tensor:
        """The positive anchor of each chunk: argmin_m L1(target, anchor_m). target (B, H, d) -> (B,)."""
        return (target[:, None] - self.anchors[None]).abs().flatten(2).sum(-1).argmin(dim=1)

    def loss(
        self,
        cond: torch.Tensor,
        proprio: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator | None = None,
        classification_weight: float = 1.0,
        smoothness: SmoothnessWeights | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss for the configured mode on normalised target chunks (B, H, d); `smoothness` adds the
        velocity and acceleration terms (policy_runtime/model/smoothness.py) on the predicted clean chunk."""
        cfg = self.config
        memory = self.encode_condition(cond)
        b = target.shape[0]
        if cfg.mode == "regression":
            zeros = torch.zeros(b, 1, *target.shape[1:], device=target.device)
            x0, _ = self.denoise(
                zeros, torch.zeros(b, dtype=torch.long, device=target.device), memory, proprio
            )
            pred = x0[:, 0]
            total = recon = F.l1_loss(pred, target)
            logs = {"recon": float(recon.detach())}
        else:
            high = cfg.truncated_steps if cfg.mode == "anchored" else cfg.schedule_steps
            # Random draws on the CPU generator (deterministic across devices), then moved.
            t = torch.randint(0, high, (b,), generator=generator).to(target.device)
            a = self.alphas_cumprod[t][:, None, None, None]
            if cfg.mode == "diffusion":
                noise = torch.randn(b, 1, *target.shape[1:], generator=generator).to(target.device)
                x0, _ = self.denoise(a.sqrt() * target[:, None] + (1 - a).sqrt() * noise, t, memory, proprio)
                pred = x0[:, 0]
                # The standard denoising objective (Diffusion Policy).
                total = recon = F.mse_loss(pred, target)
                logs = {"recon": float(recon.detach())}
            else:
                shape = (b, cfg.num_anchors, *target.shape[1:])
                noise = torch.randn(shape, generator=generator).to(target.device)
                x0, scores = self.denoise(
                    a.sqrt() * self.anchors[None] + (1 - a).sqrt() * noise, t, memory, proprio
                )
                positive = self.nearest_anchor(target)
                pred = x0[torch.arange(b, device=target.device), positive]
                recon = F.l1_loss(pred, target)
                classification = F.cross_entropy(scores, positive)
                total = recon + classification_weight * classification
                logs = {"recon": float(recon.detach()), "cls": float(classification.detach())}
        if smoothness:
            smooth, smooth_logs = smoothness_loss(pred, target, smoothness)
            total = total + smooth
            logs.update(smooth_logs)
        return total, logs
