"""The training stages' losses, shared by `anchorvla train` and the ablation benchmark: the main stage (LoRA +
head; in the smoothness stage with AnoleVLA's velocity and acceleration terms, `smoothness`), and the residual
stage.

A batch is a dict of tensors: `proprio` (B, P) normalised, `proprio_delta` (B, P) normalised state delta (for a
backbone that reads it), `actions` (B, H, d) normalised target chunk,
`future_proprio` (B, H, P) normalised proprio at each step of the chunk (what the residual sees), for a
policy with a backbone, `images` (B, N, 3, S, S), `input_ids` and `attention_mask` (B, L), and for one with a goal
probe `goal` (B, 3) the goal's normalised position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from policy_runtime.model.gripper import gripper_loss
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.smoothness import SmoothnessWeights


def _condition(policy: AnchorVLAPolicy, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return policy.condition(
        batch["proprio"],
        batch.get("images"),
        batch.get("input_ids"),
        batch.get("attention_mask"),
        batch.get("proprio_delta"),
    )


def stage1_loss(
    policy: AnchorVLAPolicy,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
    smoothness: SmoothnessWeights | None = None,
    goal_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """LoRA + head: the head's loss (anchored: reconstruction of the chunk + anchor classification, positive =
    nearest anchor by L1), plus the weighted velocity and acceleration terms (policy_runtime/model/smoothness.py),
    plus, for a policy with a goal probe, `goal_weight` times its mean squared error on the batch's `goal`."""
    cond = _condition(policy, batch)
    loss, logs = policy.head.loss(cond, batch["proprio"], batch["actions"], generator, smoothness=smoothness)
    if policy.goal_probe is not None:
        goal = torch.nn.functional.mse_loss(policy.goal_probe(cond), batch["goal"])
        loss = loss + goal_weight * goal
        logs = dict(logs, goal=float(goal.detach()))
    return loss, logs


def gripper_stage_loss(
    policy: AnchorVLAPolicy, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """The gripper stage (AnchorRefine): the gripper head alone, on top of the finished policy's plans. The frozen
    policy plans the batch as it does when it runs (`gripper_plan`) and the head learns the demonstrated open/close
    of each step (policy_runtime/model/gripper.py)."""
    assert policy.gripper_head is not None
    with torch.no_grad():
        cond = _condition(policy, batch)
    chunk, context = gripper_plan(policy, cond, batch["proprio"], generator)
    logits = policy.gripper_head(context, batch["proprio"], chunk)
    index = policy.gripper_head.config.channel_index
    return gripper_loss(
        logits, policy.gripper_head.margin, batch["actions"][..., index], policy.gripper_head.config
    )


@torch.no_grad()
def gripper_plan(
    policy: AnchorVLAPolicy,
    cond: torch.Tensor,
    proprio: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan the gripper head learns on: (chunk (B, H, d), context (B, C)) as the policy makes it when it runs,
    with the configured denoising steps (`head.inference_steps`), so the head trains on the plans it sits on.
    No gradient: the decision never changes the plan."""
    noise = torch.randn(policy.head.noise_shape(proprio.shape[0]), generator=generator).to(cond.device)
    chunk, _, _, _, context = policy.head.sample(cond, proprio, noise)
    return chunk, context


def train_only(policy: AnchorVLAPolicy, module: str) -> list[torch.nn.Parameter]:
    """A stage that trains one module of the policy alone (`residual`, `gripper_head`): the rest frozen; returns
    the module's parameters."""
    for name, p in policy.named_parameters():
        p.requires_grad_(name.startswith(module + "."))
    return list(getattr(policy, module).parameters())


@torch.no_grad()
def planned_chunks(
    policy: AnchorVLAPolicy, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the frozen policy plans for the batch: (chunk (B, H, d), same-mode mask (B,), context (B, C)).

    The mask keeps the samples where the head chose the demonstration's mode (its anchor is the demonstration's
    nearest anchor), so the residual learns corrections within a mode and never a jump to the other route.
    """
    b = batch["proprio"].shape[0]
    noise = torch.randn(policy.head.noise_shape(b), generator=generator).to(batch["proprio"].device)
    cond = _condition(policy, batch)
    chunk, index, _, _, context = policy.head.sample(cond, batch["proprio"], noise)
    if policy.head.config.mode == "anchored":
        same_mode = index == policy.head.nearest_anchor(batch["actions"])
    else:
        same_mode = torch.ones(b, dtype=torch.bool, device=chunk.device)
    return chunk, same_mode, context


def residual_corrections(
    policy: AnchorVLAPolicy, future_proprio: torch.Tensor, context: torch.Tensor, chunk: torch.Tensor
) -> torch.Tensor:
    """The residual's correction for every step j of every chunk: (B, H, P), (B, C), (B, H, d) -> (B, H, d)."""
    b, h, d = chunk.shape
    j = torch.arange(h, device=chunk.device).repeat(b)
    ctx = context[:, None].expand(b, h, context.shape[-1]).reshape(b * h, -1)
    out = policy.residual(future_proprio.reshape(b * h, -1), ctx, chunk.reshape(b * h, d), j)
    return out.reshape(b, h, d)


def stage2_loss(
    policy: AnchorVLAPolicy, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Residual only: L1 between its correction and (demonstrated action - planned action), same-mode samples.

    The frozen policy plans the batch here, unless the batch carries the plans already (`planned`, `same_mode`,
    `context` from `planned_chunks`, computed once since the head no longer changes).
    """
    if "planned" in batch:
        chunk, same_mode, context = batch["planned"], batch["same_mode"], batch["context"]
    else:
        chunk, same_mode, context = planned_chunks(policy, batch, generator)
    correction = residual_corrections(policy, batch["future_proprio"], context, chunk)
    target = batch["actions"] - chunk
    per_sample = (correction - target).abs().mean(dim=(1, 2))
    weight = same_mode.float()
    loss = (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
    return loss, {"l1": float(loss.detach()), "same_mode": float(weight.mean())}


class StageLoss(torch.nn.Module):
    """A stage's loss as a module call, so DistributedDataParallel sees the forward and averages the gradients."""

    def __init__(self, policy: AnchorVLAPolicy, loss_fn: Callable):
        super().__init__()
        self.policy = policy
        self.loss_fn = loss_fn

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss_fn(self.policy, batch, generator)
