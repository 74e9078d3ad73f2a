"""Real-time chunking in the anchored head (issue 23): the in-painted chunk reproduces the prefix, a prefix of length
0 changes nothing, the scoring prefers the candidate that agrees with the prefix, the exported one-graph head agrees
with torch on the same noise, both engines take the prefix from the observation once switched on, and a bundle exported before the prefix inputs still
loads and runs while a config that asks it for prefix conditioning is refused in one line (exit 2)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anchorvla.cli import main as cli
from policy_runtime.bundle import BundleError, read_manifest
from policy_runtime.engines.onnx_engine import OnnxEngine
from policy_runtime.engines.torch_engine import TorchEngine
from policy_runtime.model.checkpoint import load_checkpoint
from tests.bundle_helpers import tiny_bundle
from tests.policy_runtime.test_onnx_engine import _observation
from tools.bundle_samples import synthetic_samples

REPO = Path(__file__).resolve().parents[2]
# A bundle committed before the head took a prefix (its head graph has bridge, proprio and noise only).
OLD_BUNDLE = REPO / "policies/demo/bundle"


@pytest.fixture(scope="module")
def head_case():
    """(policy, ONNX engine on the fp32 variant, bridge, proprio, noise) of the tiny bundle, on one sample."""
    checkpoint, bundle = tiny_bundle()
    policy, _config = load_checkpoint(checkpoint)
    engine = OnnxEngine(bundle, precision="fp32", threads=1)
    sample = synthetic_samples(engine.manifest.runtime, bundle, 1, 123)[0]
    bridge = engine.condition(sample.backbone_feed())
    return policy, engine, bridge, sample.proprio, sample.noise


def _sample(policy, bridge, proprio, noise, prefix=None, length=0, weight=0.0, num_steps=None):
    t = torch.from_numpy
    extra = {}
    if prefix is not None:
        extra = dict(
            prefix=t(prefix), prefix_length=torch.tensor([length]), prefix_score_weight=torch.tensor([weight])
        )
    with torch.no_grad():
        out = policy.head.sample(t(bridge), t(proprio), t(noise), num_steps, **extra)
    return [o.numpy() for o in out]


def test_the_inpainted_chunk_reproduces_the_prefix_and_an_empty_prefix_changes_nothing(head_case):
    policy, _engine, bridge, proprio, noise = head_case
    free = _sample(policy, bridge, proprio, noise)
    prefix = np.random.default_rng(0).uniform(-1, 1, (1, *noise.shape[2:])).astype(np.float32)
    chunk, _index, _scores, candidates, _ctx = _sample(policy, bridge, proprio, noise, prefix, 3, 5.0)
    np.testing.assert_allclose(candidates[0, :, :3], np.broadcast_to(prefix[0, :3], candidates[0, :, :3].shape),
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(chunk[0, :3], prefix[0, :3], atol=1e-6)
    assert np.abs(chunk[0, 3:] - free[0][0, 3:]).max() > 1e-3  # the rest is denoised knowing the prefix
    empty = _sample(policy, bridge, proprio, noise, prefix, 0, 5.0)
    for got, want in zip(empty, free, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_scoring_prefers_the_candidate_that_agrees_with_the_prefix(head_case):
    policy, _engine, bridge, proprio, noise = head_case
    free_index = _sample(policy, bridge, proprio, noise)[1][0]
    # Each candidate's clean estimate at the first denoising step, before it knows the prefix.
    first_step = _sample(policy, bridge, proprio, noise, num_steps=1)[3][0]
    other = (free_index + 1) % first_step.shape[0]
    prefix = np.zeros((1, *noise.shape[2:]), np.float32)
    prefix[0, :4] = first_step[other, :4]
    # In-painting alone does not pick it; the score penalty does.
    assert _sample(policy, bridge, proprio, noise, prefix, 4, 0.0)[1][0] != other
    assert _sample(policy, bridge, proprio, noise, prefix, 4, 1e4)[1][0] == other


def test_the_exported_head_agrees_with_torch_with_a_prefix(head_case):
    policy, engine, bridge, proprio, noise = head_case
    assert engine.manifest.runtime.prefix_conditioning
    assert {"prefix", "prefix_length", "prefix_score_weight"} <= {
        i.name for i in engine.sessions["head"].get_inputs()
    }
    prefix = np.random.default_rng(1).uniform(-1, 1, (5, noise.shape[3])).astype(np.float32)
    full = np.zeros((1, *noise.shape[2:]), np.float32)
    full[0, :5] = prefix
    chunk, index, scores, context = engine.head(bridge, proprio, noise, prefix, 3.0)[:4]
    ref_chunk, ref_index, ref_scores, _cand, ref_context = _sample(
        policy, bridge, proprio, noise, full, 5, 3.0
    )
    np.testing.assert_allclose(chunk, ref_chunk, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_allclose(chunk[0, :5], prefix, atol=1e-6)


def test_the_engines_condition_on_the_observations_prefix_in_si_units():
    checkpoint, bundle = tiny_bundle()
    onnx_engine = OnnxEngine(bundle, precision="fp32", threads=1, seed=3)
    torch_engine = TorchEngine(checkpoint, seed=3, threads=1)
    obs = _observation()
    planned = onnx_engine.infer(obs).actions  # a plan in SI units, as the schedule holds it
    # A prefix inside the action range, unlike the chunk's own first actions.
    prefix = (planned[2:5] + planned[3:6]) / 2
    conditioned = dataclasses.replace(obs, prefix=prefix)
    for engine in (onnx_engine, torch_engine):
        engine.reseed(3)
        assert np.abs(engine.infer(conditioned).actions[:3] - prefix).max() > 0.02  # not switched on
        engine.condition_on_prefix(5.0)
        engine.reseed(3)
        np.testing.assert_allclose(engine.infer(conditioned).actions[:3], prefix, atol=1e-5)


def test_a_bundle_without_the_prefix_inputs_still_runs_and_refuses_prefix_conditioning():
    manifest = json.loads((OLD_BUNDLE / "manifest.json").read_text())
    assert "prefix_conditioning" not in manifest["runtime"], (
        f"{OLD_BUNDLE} was re-exported: pick an older bundle"
    )
    assert read_manifest(OLD_BUNDLE).runtime.prefix_conditioning is False
    engine = OnnxEngine(OLD_BUNDLE, threads=1)
    obs = dataclasses.replace(_observation(), goal=np.array([0.3, 0.0, 0.05]), prefix=np.zeros((3, 9)))
    chunk = engine.infer(obs)
    assert chunk.actions.shape == (8, len(engine.channels)) and np.all(np.isfinite(chunk.actions))
    with pytest.raises(BundleError, match="no prefix inputs") as exc:
        engine.condition_on_prefix(5.0)
    assert "\n" not in str(exc.value) and "policy.prefix_conditioning: false" in str(exc.value)


def test_eval_refuses_prefix_conditioning_on_an_old_bundle_in_one_line(capsys):
    args = ["eval", "--config", str(REPO / "configs/sim.yaml"), "--task", "touch", "--episodes", "1",
            "--variant", f"bundle={OLD_BUNDLE},rtc=on"]  # fmt: skip
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no prefix inputs" in err[-1] and "re-export" in err[-1] and "Traceback" not in "\n".join(err)
