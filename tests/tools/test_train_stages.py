"""The two training stages on a compact policy (no VLM backbone): each learns, and each leaves the other's
parameters alone."""

from __future__ import annotations

import torch

from policy_runtime.model.config import ArchitectureConfig, HeadConfig, ResidualConfig
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.training import stage1_loss, stage2_loss, train_only


def _policy(mode: str) -> AnchorVLAPolicy:
    torch.manual_seed(0)
    head = HeadConfig(
        mode=mode,
        horizon=4,
        action_dim=2,
        proprio_dim=3,
        cond_dim=16,
        dim=16,
        depth=1,
        heads=2,
        num_anchors=3,
    )
    return AnchorVLAPolicy(ArchitectureConfig(backbone=None, head=head, residual=ResidualConfig(hidden=16)))


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "proprio": torch.randn(8, 3, generator=g),
        "actions": torch.rand(8, 4, 2, generator=g) * 2 - 1,
        "future_proprio": torch.randn(8, 4, 3, generator=g),
    }


def _fit(policy, loss_fn, params, steps: int) -> tuple[float, float]:
    opt = torch.optim.Adam(params, lr=3e-3)
    batch, gen = _batch(), torch.Generator().manual_seed(2)
    losses = []
    for _ in range(steps):
        loss, _ = loss_fn(policy, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return sum(losses[:5]) / 5, sum(losses[-5:]) / 5  # averaged: the diffusion timestep is random per step


def test_stage1_learns_reconstruction_and_classification_and_leaves_the_residual_alone():
    policy = _policy("anchored")
    policy.head.anchors.copy_(_batch()["actions"][:3])
    residual_before = {k: v.clone() for k, v in policy.residual.state_dict().items()}
    first, last = _fit(policy, stage1_loss, policy.main_parameters(), 60)
    assert last < 0.7 * first
    assert all(torch.equal(v, policy.residual.state_dict()[k]) for k, v in residual_before.items())


def test_stage2_trains_only_the_residual_and_reduces_its_l1():
    policy = _policy("regression")  # every sample counts as the head's own mode
    main_before = {k: v.clone() for k, v in policy.state_dict().items() if not k.startswith("residual.")}
    params = train_only(policy, "residual")
    assert {id(p) for p in params} == {id(p) for p in policy.parameters() if p.requires_grad}
    first, last = _fit(policy, stage2_loss, params, 40)
    assert last < 0.7 * first
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in main_before.items())
