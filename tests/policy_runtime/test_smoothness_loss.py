"""AnoleVLA's smoothness terms on our joint-target chunks: the velocity (first differences of the chunk continuing
from the current state) and the acceleration (second differences), each with its own weight, added by every head;
and the train flags that set them (the old first-difference 'acceleration' flags are refused in one line)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anchorvla.cli import main as cli
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.config import ArchitectureConfig, HeadConfig, ResidualConfig
from policy_runtime.model.head import AnchoredDiffusionHead
from policy_runtime.model.linear_head import LinearHead
from policy_runtime.model.smoothness import SmoothnessWeights, velocity_acceleration_l1
from tools.obstacle_task import write_demo_dataset


def _explicit(pred: np.ndarray, target: np.ndarray, state: np.ndarray) -> tuple[float, float]:
    """The definition, written out: both chunks continue from the state s; velocities v[tau] = a[tau] - a[tau-1]
    for tau = 1..H (a[0] = s), accelerations v[tau] - v[tau-1] for tau = 2..H."""
    terms = []
    for chunk in (pred, target):
        full = np.concatenate([state[:, None], chunk], axis=1)
        v = full[:, 1:] - full[:, :-1]
        terms.append((v, v[:, 1:] - v[:, :-1]))
    (vp, ap), (vt, at) = terms
    return float(np.abs(vp - vt).mean()), float(np.abs(ap - at).mean())


def test_terms_are_the_differences_of_chunks_continuing_from_the_current_state():
    rng = np.random.default_rng(0)
    pred, target = rng.uniform(-1, 1, (2, 3, 6, 4))
    state = rng.uniform(-1, 1, (3, 4))
    vel, acc = velocity_acceleration_l1(torch.tensor(pred), torch.tensor(target))
    want_vel, want_acc = _explicit(pred, target, state)
    assert np.isclose(float(vel), want_vel) and np.isclose(float(acc), want_acc)
    # Whatever the state, the same terms: it is the same for the prediction and the demonstration.
    assert np.allclose(_explicit(pred, target, state * 0), (want_vel, want_acc))


def test_an_offset_chunk_is_a_jump_from_the_state_and_a_spike_shows_in_both_terms():
    # Multiples of 1/8 are exact in float32.
    target = torch.randint(-8, 8, (3, 6, 4)).float() / 8
    vel, acc = velocity_acceleration_l1(target, target)
    assert float(vel) == 0.0 and float(acc) == 0.0
    # Offset by 0.5: the same shape, but the first step jumps 0.5 away from the state (the old first-difference
    # loss saw nothing here): velocity error 0.5 at tau=1 of 6, acceleration error 0.5 at tau=2 of 5.
    vel, acc = velocity_acceleration_l1(target + 0.5, target)
    assert torch.isclose(vel, torch.tensor(0.5 / 6)) and torch.isclose(acc, torch.tensor(0.5 / 5))
    # One step 0.3 off: velocity errors +0.3, -0.3; acceleration errors +0.3, -0.6, +0.3.
    spiky = target.clone()
    spiky[:, 2] += 0.3
    vel, acc = velocity_acceleration_l1(spiky, target)
    assert torch.isclose(vel, torch.tensor(0.6 / 6)) and torch.isclose(acc, torch.tensor(1.2 / 5))
    # A one-step chunk has a velocity (from the state) and no acceleration.
    vel, acc = velocity_acceleration_l1(target[:, :1] + 0.25, target[:, :1])
    assert float(vel) == 0.25 and float(acc) == 0.0


SIZES = dict(action_dim=3, proprio_dim=5, cond_dim=16, dim=16, heads=2)


def test_every_head_adds_each_weighted_term_and_reports_both():
    torch.manual_seed(0)
    cond, proprio, target = torch.randn(2, 3, 16), torch.randn(2, 5), torch.rand(2, 4, 3) * 2 - 1
    weights = SmoothnessWeights(velocity=0.7, acceleration=2.0)
    for head in (
        AnchoredDiffusionHead(HeadConfig(horizon=4, num_anchors=3, **SIZES)),
        AnchoredDiffusionHead(HeadConfig(mode="regression", horizon=4, **SIZES)),
        LinearHead(HeadConfig(mode="linear", horizon=4, **SIZES)),
    ):
        out = []
        for w in (None, SmoothnessWeights(), weights):
            out.append(head.loss(cond, proprio, target, torch.Generator().manual_seed(0), smoothness=w))
        (plain, plain_logs), (zero, zero_logs), (total, logs) = out
        assert "vel" not in plain_logs and "vel" not in zero_logs and torch.equal(plain, zero)
        assert logs["vel"] > 0 and logs["acc"] > 0
        want = plain + 0.7 * logs["vel"] + 2.0 * logs["acc"]
        assert torch.isclose(total, want, atol=1e-5), type(head).__name__


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("ds"), episodes=4, seed=2)


def _train(dataset, out, *extra: str) -> int:
    head = HeadConfig(horizon=4, action_dim=2, proprio_dim=3, cond_dim=16, dim=16, depth=1, heads=2)
    arch = ArchitectureConfig(backbone=None, head=head, residual=ResidualConfig(hidden=8))
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / "arch.json").write_text(arch.model_dump_json())
    return cli(
        ["train", "--dataset", str(dataset), "--out", str(out), "--architecture", str(out.parent / "arch.json"),
         "--horizon", "4", "--num-anchors", "4", "--batch", "4", "--steps", "2", "--residual-steps", "1",
         "--threads", "1", "--no-progress", *extra]
    )  # fmt: skip


def test_train_runs_the_smoothness_stage_with_both_weights(dataset, tmp_path):
    flags = ["--smooth-steps", "2", "--smooth-velocity-weight", "0.5", "--smooth-accel-weight", "2"]
    assert _train(dataset, tmp_path / "ckpt", *flags) == 0
    _, config = load_checkpoint(tmp_path / "ckpt")
    got = {k: config.provenance[k] for k in ("smooth_steps", "smooth_velocity_weight", "smooth_accel_weight")}
    assert got == {"smooth_steps": 2, "smooth_velocity_weight": 0.5, "smooth_accel_weight": 2.0}


def test_old_acceleration_flags_and_resuming_an_old_acceleration_run_are_refused_in_one_line(
    dataset, tmp_path, capsys
):
    assert _train(dataset, tmp_path / "a", "--accel-steps", "5", "--accel-weight", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "--smooth-steps N --smooth-velocity-weight V --smooth-accel-weight A" in err and "\n" not in err
    # A run of the old trainer stopped before its acceleration stage ended: its checkpoint reads, its resume not.
    assert _train(dataset, tmp_path / "b", "--stop-after", "1") == 0
    config_file = tmp_path / "b/config.json"
    config = json.loads(config_file.read_text())
    config["provenance"] = {**config["provenance"], "accel_steps": 500, "accel_weight": 1.0}
    config_file.write_text(json.dumps(config))
    load_checkpoint(tmp_path / "b", with_residual=False)
    capsys.readouterr()
    assert _train(dataset, tmp_path / "b", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "old first-difference 'acceleration' stage" in err and "\n" not in err
