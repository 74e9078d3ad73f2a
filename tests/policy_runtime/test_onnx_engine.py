"""The ONNX Runtime engine: Observation in, SI-unit ActionChunk out, the same as the torch model on the same
inputs; the residual in SI units; and the onboard process running a bundle without ever importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame
from onboard.config import Config
from onboard.devices import build_engine
from policy_runtime.engines.base import PolicyEngine
from policy_runtime.engines.onnx_engine import OnnxEngine
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.types import Observation
from tests.bundle_helpers import tiny_bundle
from tools.demo_checkpoint import ACTION_HIGH, ACTION_LAYOUT, ACTION_LOW


def _observation(seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    arm = ArmState(1_000, SO101_JOINTS, rng.uniform(-1, 1, 6), rng.uniform(-0.5, 0.5, 6))
    base = BaseState(1_000, np.zeros(3), 0.0, np.array([0.2, 0.0, 0.0]), 0.1)
    frames = {
        name: Frame(900, name, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        for name in ("third_person", "wrist")
    }
    return Observation(1_000, arm, base, frames, "pick up the red cup")


def _torch_chunk(engine: OnnxEngine, obs: Observation, noise: np.ndarray):
    checkpoint, _bundle = tiny_bundle()
    policy, _config = load_checkpoint(checkpoint)
    proprio = engine.inputs.proprio(obs)
    ids, mask = engine.inputs.tokens(obs.instruction)
    t = torch.from_numpy
    with torch.no_grad():
        out = policy(t(proprio), t(noise), t(engine.inputs.images(obs)), t(ids), t(mask))
    return policy, proprio, [o.numpy() for o in out]


def test_infer_gives_the_torch_chunk_in_si_units_with_channels_by_name():
    _checkpoint, bundle = tiny_bundle()
    engine = OnnxEngine(bundle, precision="fp32", threads=1, seed=7)
    assert isinstance(engine, PolicyEngine) and engine.variant == "fp32"
    obs = _observation()
    chunk = engine.infer(obs)
    noise = np.random.default_rng(7).standard_normal(engine.manifest.runtime.noise_shape).astype(np.float32)
    _policy, _proprio, (ref_chunk, ref_index, ref_scores, _cand, _ctx) = _torch_chunk(engine, obs, noise)
    assert chunk.channels == tuple(ACTION_LAYOUT) and chunk.actions.shape == (8, len(ACTION_LAYOUT))
    assert chunk.t_obs_ns == obs.t_ns and chunk.dt_ns == round(1e9 / 15)
    low, high = np.array(ACTION_LOW), np.array(ACTION_HIGH)
    np.testing.assert_allclose(chunk.actions, low + (ref_chunk[0] + 1) / 2 * (high - low), atol=1e-4)
    assert chunk.anchor_index == int(ref_index[0]) == int(np.argmax(chunk.scores))
    np.testing.assert_allclose(chunk.scores, ref_scores[0], atol=1e-4)
    assert np.all(chunk.actions >= low - 1e-9) and np.all(chunk.actions <= high + 1e-9)


def test_residual_correction_matches_torch_in_si_units():
    _checkpoint, bundle = tiny_bundle()
    engine = OnnxEngine(bundle, precision="fp32", threads=1, seed=3)
    obs = _observation(1)
    chunk = engine.infer(obs)
    policy, proprio, _out = _torch_chunk(
        engine, obs, np.zeros(engine.manifest.runtime.noise_shape, np.float32)
    )
    planned = chunk.actions[2]
    got = engine.residual(obs, chunk, 2, planned)
    low, high = np.array(ACTION_LOW), np.array(ACTION_HIGH)
    planned_norm = (2 * (planned - low) / (high - low) - 1)[None].astype(np.float32)
    with torch.no_grad():
        ref = policy.residual(torch.from_numpy(proprio), torch.from_numpy(chunk.context),
                              torch.from_numpy(planned_norm), torch.tensor([2])).numpy()[0]  # fmt: skip
    assert np.abs(ref).max() > 0  # the test checkpoint's residual is not the zero correction
    np.testing.assert_allclose(got, ref * (high - low) / 2, atol=1e-5)


def test_auto_precision_picks_the_verified_int8_variant_and_build_engine_wires_it():
    _checkpoint, bundle = tiny_bundle()
    config = Config.model_validate({"policy": {"engine": "onnxruntime", "bundle": str(bundle), "threads": 1}})
    engine = build_engine(config)
    assert isinstance(engine, OnnxEngine) and engine.variant == "int8"
    engine.warmup()
    assert engine.infer(_observation()).is_finite()


def test_an_engine_without_a_bundle_path_or_with_a_missing_camera_says_so():
    with pytest.raises(UserError, match="needs policy.bundle"):
        build_engine(Config.model_validate({"policy": {"engine": "onnxruntime"}}))
    _checkpoint, bundle = tiny_bundle()
    engine = OnnxEngine(bundle, precision="fp32")
    obs = _observation()
    with pytest.raises(UserError, match="wrist"):
        engine.infer(
            Observation(obs.t_ns, obs.arm, obs.base, {"third_person": obs.frames["third_person"]}, "x")
        )


# Runs `anchorvla run` with the bundle while any import of torch or tensorrt raises.
_NO_TORCH = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "tensorrt", "transformers"):
                raise ImportError(f"blocked import of {name}")
    sys.meta_path.insert(0, Block())
    from anchorvla.cli import main
    code = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt", "transformers"))
    print("LEAKED", leaked)
    sys.exit(code)
    """
)


def test_anchorvla_run_with_an_onnx_bundle_never_imports_torch_or_tensorrt(tmp_path):
    _checkpoint, bundle = tiny_bundle()
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""
        robot:
          cameras:
            - {{name: third_person, driver: standin, width: 64, height: 48}}
            - {{name: wrist, driver: standin, width: 64, height: 48}}
        policy: {{engine: onnxruntime, bundle: {bundle}, instruction: "pick up the red cup", threads: 1}}
        telemetry: {{log_level: WARNING}}
    """))  # fmt: skip
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, "run", "--config", str(config), "--duration", "2", "--summary", str(summary)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LEAKED []" in proc.stdout
    result = json.loads(summary.read_text())
    assert result["chunks"] >= 2 and result["exit_reason"] == "duration"
