"""AnoleVLA's acceleration loss: L1 on the chunk's first differences, added with weight lambda to every head."""

from __future__ import annotations

import torch

from policy_runtime.model.config import HeadConfig
from policy_runtime.model.head import AnchoredDiffusionHead
from policy_runtime.model.linear_head import LinearHead
from policy_runtime.model.smoothness import action_difference_l1


def test_zero_for_identical_differences_positive_otherwise():
    # Multiples of 1/8 are exact in float32, so an offset keeps every difference exactly.
    target = torch.randint(-8, 8, (3, 6, 4)).float() / 8
    assert float(action_difference_l1(target + 0.5, target)) == 0.0
    jerky = target.clone()
    jerky[:, 2] += 0.3
    assert float(action_difference_l1(jerky, target)) > 0.0
    # One step changed by 0.3 changes two differences by 0.3: mean over (B, H-1, d) of those.
    assert torch.isclose(action_difference_l1(jerky, target), torch.tensor(2 * 0.3 / 5))
    assert float(action_difference_l1(target[:, :1], target[:, :1])) == 0.0  # a one-step chunk has none


SIZES = dict(action_dim=3, proprio_dim=5, cond_dim=16, dim=16, heads=2)


def _losses(head, weight: float):
    cond = torch.randn(2, 3, 16)
    proprio = torch.randn(2, 5)
    target = torch.rand(2, 4, 3) * 2 - 1
    out = {}
    for w in (0.0, weight):
        gen = torch.Generator().manual_seed(0)
        out[w] = head.loss(cond, proprio, target, gen, accel_weight=w)
    return out


def test_every_head_adds_the_weighted_term_and_reports_it():
    torch.manual_seed(0)
    for head in (
        AnchoredDiffusionHead(HeadConfig(horizon=4, num_anchors=3, **SIZES)),
        AnchoredDiffusionHead(HeadConfig(mode="regression", horizon=4, **SIZES)),
        LinearHead(HeadConfig(mode="linear", horizon=4, **SIZES)),
    ):
        out = _losses(head, 2.0)
        (plain, plain_logs), (total, logs) = out[0.0], out[2.0]
        assert "accel" not in plain_logs and logs["accel"] > 0
        assert torch.isclose(total, plain + 2.0 * logs["accel"], atol=1e-5), type(head).__name__
