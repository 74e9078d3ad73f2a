"""The `mamba` backbone option (AnoleVLA): a tiny Mamba policy with the linear head trains on a recorded dataset
(stage 1, the smoothness stage, the residual), exports, and the ONNX Runtime engine gives the torch engine's
chunk on the same Observation, state delta included; the state delta is the same in training and inference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anchorvla.cli import main as cli
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame
from policy_runtime.dataset import EpisodeRecord, load_dataset, write_dataset
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.config import ArchitectureConfig, BackboneConfig, HeadConfig, ResidualConfig
from policy_runtime.model.tokenizer import BYTE_VOCAB_SIZE
from policy_runtime.preprocess import ProprioLayout
from policy_runtime.types import Observation

REPO = Path(__file__).resolve().parents[2]
ACTIONS = ["base.vx", "base.vy", "base.wz", *(f"arm.{j}" for j in SO101_JOINTS)]
PROPRIO = [*ACTIONS, "goal.x", "goal.y", "goal.z"]
CAMERAS = ("third_person", "wrist")


def tiny_mamba_architecture() -> ArchitectureConfig:
    """A Mamba policy small enough for a unit test: 16 px images, a 1-layer Mamba 32 wide, the linear head."""
    backbone = BackboneConfig(
        kind="mamba",
        vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    image_size=16, patch_size=8, num_channels=3),
        llm=dict(vocab_size=BYTE_VOCAB_SIZE, hidden_size=32, state_size=8, num_hidden_layers=1, expand=2,
                 conv_kernel=4, time_step_rank=4),
        lora_rank=2, lora_alpha=4, lora_targets=["in_proj", "x_proj", "dt_proj"], num_images=2,
        max_instruction_tokens=8,
    )  # fmt: skip
    head = HeadConfig(
        mode="linear", horizon=4, action_dim=len(ACTIONS), proprio_dim=len(PROPRIO), cond_dim=32
    )
    return ArchitectureConfig(backbone=backbone, head=head, residual=ResidualConfig(hidden=16), image_size=16)


def _episode(rng: np.random.Generator, frames: int, task: str) -> EpisodeRecord:
    t = np.arange(frames)[:, None] / 15.0
    arm = np.sin(t * rng.uniform(0.5, 2.0, 6) + rng.uniform(0, 3, 6)) * 0.5
    # The goal drifts; its delta must stay 0 all the same.
    goal = np.tile(rng.uniform(-0.2, 0.2, 3), (frames, 1)) + t * 0.01
    states = np.concatenate([np.zeros((frames, 3)), arm, goal], axis=1)
    actions = np.concatenate([np.full((frames, 3), 0.1), np.roll(arm, -1, axis=0)], axis=1)
    images = {c: rng.integers(0, 256, (frames, 24, 24, 3), dtype=np.uint8) for c in CAMERAS}
    return EpisodeRecord(states, actions, task, images)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    episodes = [_episode(rng, 12, task) for task in ("touch the marker", "lift the ball", "reach")]
    return write_dataset(tmp_path_factory.mktemp("ds"), episodes, 15.0, ACTIONS, PROPRIO)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mamba")
    arch = root / "architecture.json"
    arch.write_text(tiny_mamba_architecture().model_dump_json())
    out = root / "checkpoint"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--architecture", str(arch), "--horizon", "4",
            "--batch", "4", "--steps", "3", "--smooth-steps", "2", "--smooth-accel-weight", "0.5", "--residual-steps", "2",
            "--threads", "1", "--no-progress"]  # fmt: skip
    assert cli(args) == 0
    return out


def test_dataset_state_delta_is_the_previous_frame_difference_zero_at_the_start_and_on_goal(dataset):
    data = load_dataset(dataset, horizon=4, with_images=False)
    first = np.flatnonzero(data.frame == 0)
    assert np.all(data.proprio_delta[first] == 0)
    k = first[0] + 5
    arm = slice(3, 9)
    assert np.allclose(data.proprio_delta[k, arm], data.proprio[k, arm] - data.proprio[k - 1, arm])
    assert np.any(data.proprio_delta[k, arm] != 0) and np.all(data.proprio_delta[:, 9:] == 0)


def test_trained_mamba_checkpoint_has_the_linear_head_and_the_delta_statistics(trained):
    policy, config = load_checkpoint(trained)
    assert policy.reads_state_delta and type(policy.head).__name__ == "LinearHead"
    assert config.anchors is None and len(config.normalization.proprio_delta_std) == len(PROPRIO)
    assert config.provenance["smooth_steps"] == 2 and config.provenance["smooth_accel_weight"] == 0.5


def _observation(previous_offset: float) -> Observation:
    rng = np.random.default_rng(3)
    positions = rng.uniform(-0.5, 0.5, 6)
    arm = ArmState(2_000, SO101_JOINTS, positions, np.zeros(6))
    previous = ArmState(1_000, SO101_JOINTS, positions - previous_offset, np.zeros(6))
    base = BaseState(2_000, np.zeros(3), 0.0, np.array([0.1, 0.0, 0.0]), 0.0)
    frames = {c: Frame(1_900, c, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for c in CAMERAS}
    return Observation(2_000, arm, base, frames, "lift the ball", goal=np.array([0.1, 0.0, 0.05]),
                       previous_arm=previous, previous_base=base)  # fmt: skip


def test_exported_mamba_bundle_gives_the_torch_chunk_and_reads_the_state_delta(trained, tmp_path, capsys):
    from policy_runtime.engines.onnx_engine import OnnxEngine
    from policy_runtime.engines.torch_engine import TorchEngine

    bundle = tmp_path / "bundle"
    assert cli(["export", str(trained), str(bundle)]) == 0
    assert "head.onnx      ORT vs torch on a sample: cosine 1.000000" in capsys.readouterr().out
    manifest = json.loads((bundle / "manifest.json").read_text())
    backbone_inputs = [t["name"] for t in manifest["graphs"]["backbone.onnx"]["inputs"]]
    assert backbone_inputs == ["images", "input_ids", "attention_mask", "proprio", "proprio_delta"]
    head_inputs = [t["name"] for t in manifest["graphs"]["head.onnx"]["inputs"]]
    assert head_inputs == ["bridge"]  # the linear head reads neither noise nor proprio
    # The mixer's tensor_split is plain Slices in the saved graph: no sequence ops (TensorRT has none).
    import onnx

    ops = {node.op_type for node in onnx.load(str(bundle / "backbone.onnx")).graph.node}
    assert "Slice" in ops and not ops & {"SequenceConstruct", "SequenceAt", "Tile"}
    onnx_engine = OnnxEngine(bundle, precision="fp32", threads=1, force_unverified=True)
    torch_engine = TorchEngine(trained, threads=1)
    still, moving = _observation(0.0), _observation(0.05)
    chunks = {}
    for name, obs in (("still", still), ("moving", moving)):
        a, b = onnx_engine.infer(obs), torch_engine.infer(obs)
        assert a.channels == tuple(ACTIONS) and a.anchor_index is None
        assert np.allclose(a.actions, b.actions, atol=1e-4), name
        chunks[name] = a.actions
    assert not np.allclose(chunks["still"], chunks["moving"], atol=1e-6)  # the delta token reaches the chunk
    # Without a previous tick the delta is zero, as at an episode's first frame in training.
    first = Observation(still.t_ns, still.arm, still.base, still.frames, still.instruction, goal=still.goal)
    assert np.allclose(onnx_engine.infer(first).actions, chunks["still"], atol=1e-6)
    onnx_engine.close()


def test_state_delta_is_zero_on_goal_channels_and_without_a_previous_tick():
    layout = ProprioLayout(tuple(PROPRIO))
    obs = _observation(0.05)
    delta = layout.delta(obs.arm, obs.base, obs.previous_arm, obs.previous_base, obs.goal)
    assert np.allclose(delta[3:9], 0.05) and np.all(delta[9:] == 0) and np.all(delta[:3] == 0)
    assert np.all(layout.delta(obs.arm, obs.base, None, None, obs.goal) == 0)
    # A previous tick without a base (not yet reported) counts as no previous tick, never as NaN.
    assert np.all(layout.delta(obs.arm, obs.base, obs.previous_arm, None, obs.goal) == 0)


def test_shipped_checkpoints_load_as_before():
    policy, config = load_checkpoint(REPO / "policies/demo/checkpoint")
    assert not policy.reads_state_delta and type(policy.head).__name__ == "AnchoredDiffusionHead"
    assert config.architecture.backbone.kind == "vlm" and config.normalization.proprio_delta_std is None


def test_the_shipped_mamba_option_runs_in_the_controller_through_onnx_runtime(tmp_path):
    """policies/options/mamba/sim.yaml: the emulated robot with the Mamba policy's bundle through ONNX Runtime, on
    its FP32 variant: its INT8 backbone failed `anchorvla verify` (policies/options/README.md), so precision auto
    must not pick it."""
    config = tmp_path / "sim.yaml"
    text = (REPO / "policies/options/mamba/sim.yaml").read_text()
    bundle = REPO / "policies/options/mamba/bundle"
    config.write_text(text.replace("./bundle", str(bundle)).replace("domain_id: 57", "domain_id: 91"))
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "anchorvla.cli", "run", "--config", str(config), "--duration", "6"]
    proc = subprocess.run(
        [*cmd, "--summary", str(summary)], env=env, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(summary.read_text())
    assert data["ticks"] > 30 and data["chunks"] >= 3 and data["inference_failures"] == 0
    assert data["safety"]["faults"] == 0 and data["exit_reason"] == "duration"
    assert "onnxruntime engine" in proc.stderr and "variant fp32" in proc.stderr
