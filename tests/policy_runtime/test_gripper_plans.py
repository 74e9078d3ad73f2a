"""AnchorRefine's gripper head trains on the plans it runs on: the chunk it learns from in the gripper stage is the
one the finished policy makes at inference (the configured denoising steps, not a shortcut), and that stage trains
the gripper head alone."""

from __future__ import annotations

import torch

from policy_runtime.model.config import ArchitectureConfig, GripperHeadConfig, HeadConfig, ResidualConfig
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.training import gripper_plan, gripper_stage_loss, stage1_loss, train_only


def _policy(inference_steps: int) -> AnchorVLAPolicy:
    torch.manual_seed(0)
    head = HeadConfig(horizon=4, action_dim=2, proprio_dim=3, cond_dim=16, dim=16, depth=1, heads=2,
                      num_anchors=3, inference_steps=inference_steps)  # fmt: skip
    arch = ArchitectureConfig(
        backbone=None, head=head, residual=ResidualConfig(hidden=8),
        gripper_head=GripperHeadConfig(channel_index=1, hidden=8),
    )  # fmt: skip
    policy = AnchorVLAPolicy(arch).eval()
    policy.head.anchors.copy_(torch.rand(3, 4, 2) * 2 - 1)
    return policy


def test_the_gripper_head_learns_on_the_plan_the_policy_runs():
    proprio = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    for steps in (3, 10):
        policy = _policy(steps)
        cond = policy.condition(proprio)
        chunk, context = gripper_plan(policy, cond, proprio, torch.Generator().manual_seed(7))
        noise = torch.randn(policy.head.noise_shape(5), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            run, _, _, _, run_context = policy(proprio, noise)
            fewer = policy(proprio, noise, num_steps=2)[0]
        assert torch.equal(chunk, run) and torch.equal(context, run_context), steps
        assert not torch.allclose(chunk, fewer)  # the step count shows in the plan: a shortcut would differ


def test_the_gripper_stage_trains_the_gripper_head_alone():
    policy = _policy(4)
    g = torch.Generator().manual_seed(3)
    batch = {"proprio": torch.randn(4, 3, generator=g), "actions": torch.rand(4, 4, 2, generator=g) * 2 - 1}
    _, logs = stage1_loss(policy, batch, torch.Generator().manual_seed(5))
    assert "grip_bce" not in logs  # stage 1 is the main model's alone
    assert not any(p is q for p in policy.main_parameters() for q in policy.gripper_head.parameters())
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    params = train_only(policy, "gripper_head")
    optimizer = torch.optim.SGD(params, lr=0.1)
    loss, logs = gripper_stage_loss(policy, batch, torch.Generator().manual_seed(5))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])}
    assert "grip_bce" in logs and changed and all(k.startswith("gripper_head.") for k in changed)
