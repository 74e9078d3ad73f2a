"""The torch engine runs a checkpoint directory behind the PolicyEngine protocol, in SI units and named channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS, ArmState, BaseState, Frame
from onboard.config import Config
from onboard.devices import build_engine
from policy_runtime.engines.base import PolicyEngine
from policy_runtime.engines.torch_engine import TorchEngine
from policy_runtime.model.checkpoint import save_checkpoint
from policy_runtime.model.config import CheckpointConfig, Normalization
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.types import BASE_CHANNELS, Observation, arm_channel

ACTIONS = [*BASE_CHANNELS, *(arm_channel(j) for j in SO101_JOINTS)]
PROPRIO = [*(f"arm.{j}" for j in SO101_JOINTS), "base.vx", "base.vy", "base.wz"]
LOW = np.array([-0.5, -0.3, -1.0, *([-1.5] * 6)])
HIGH = np.array([1.0, 0.3, 1.0, *([1.5] * 6)])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    arch = tiny_architecture(action_dim=9, proprio_dim=9, horizon=8, num_anchors=5)
    policy = AnchorVLAPolicy(arch)
    policy.head.anchors.copy_(torch.rand(5, 8, 9) * 2 - 1)
    torch.nn.init.normal_(policy.residual.mlp[-1].weight, std=0.1)
    config = CheckpointConfig(
        architecture=arch,
        action_layout=ACTIONS,
        proprio_layout=PROPRIO,
        cameras=["front", "wrist"],
        dt_s=1 / 15,
        normalization=Normalization(
            action_low=LOW.tolist(), action_high=HIGH.tolist(), proprio_mean=[0.0] * 9, proprio_std=[1.0] * 9
        ),
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), policy, config)


@pytest.fixture(scope="module")
def engine(checkpoint):
    return TorchEngine(checkpoint)


def _observation(cameras=("front", "wrist"), instruction="pick up the cup") -> Observation:
    rng = np.random.default_rng(0)
    arm = ArmState(
        t_ns=1_000, joint_names=SO101_JOINTS, positions=rng.uniform(-1, 1, 6), velocities=np.zeros(6)
    )
    base = BaseState(
        t_ns=1_000, position=np.zeros(3), yaw=0.0, velocity=np.array([0.2, 0.0, 0.0]), yaw_speed=0.1
    )
    frames = {
        c: Frame(t_ns=900, camera=c, image=rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for c in cameras
    }
    return Observation(t_ns=1_000, arm=arm, base=base, frames=frames, instruction=instruction)


def test_infer_gives_a_named_si_chunk_with_anchor_scores_and_context(checkpoint):
    engine = TorchEngine(checkpoint, seed=3)
    assert isinstance(engine, PolicyEngine)
    engine.warmup()
    chunk = engine.infer(_observation())
    assert chunk.channels == tuple(ACTIONS) and chunk.dt_ns == round(1e9 / 15) and chunk.t_obs_ns == 1_000
    assert chunk.actions.shape == (8, 9) and chunk.is_finite()
    assert np.all(chunk.actions >= LOW - 1e-6) and np.all(chunk.actions <= HIGH + 1e-6)
    assert chunk.scores.shape == (5,) and chunk.anchor_index == int(np.argmax(chunk.scores))
    assert chunk.context.shape == (64,)
    again = TorchEngine(checkpoint, seed=3).infer(_observation())
    np.testing.assert_array_equal(again.actions, chunk.actions)
    engine.reseed(3)  # the noise restarts: the first chunk again, though the engine has sampled since
    np.testing.assert_array_equal(engine.infer(_observation()).actions, chunk.actions)


def test_residual_returns_an_si_correction_and_none_when_disabled(checkpoint, engine):
    chunk = engine.infer(_observation())
    delta = engine.residual(_observation(), chunk, 2, chunk.actions[2])
    assert delta.shape == (9,) and np.all(np.isfinite(delta)) and np.any(delta != 0)
    off = TorchEngine(checkpoint, use_residual=False)
    assert off.residual(_observation(), off.infer(_observation()), 0, chunk.actions[0]) is None


def test_missing_camera_is_one_clear_error(engine):
    with pytest.raises(UserError, match="needs camera.s. wrist"):
        engine.infer(_observation(cameras=("front",)))


def test_build_engine_picks_the_torch_engine_from_config(checkpoint):
    config = Config.model_validate({"policy": {"engine": "torch", "bundle": str(checkpoint)}})
    engine = build_engine(config)
    assert isinstance(engine, TorchEngine) and engine.channels == tuple(ACTIONS)
    with pytest.raises(UserError, match="policy.bundle"):
        build_engine(Config.model_validate({"policy": {"engine": "torch"}}))


def test_a_proprio_channel_the_robot_cannot_give_is_one_clear_error(engine):
    obs = _observation()
    no_base = Observation(t_ns=1, arm=obs.arm, base=None, frames=obs.frames, instruction="go")
    with pytest.raises(UserError, match="base.vx, base.vy, base.wz have no finite value"):
        engine.infer(no_base)


def test_the_controller_runs_a_checkpoint_through_the_torch_engine(checkpoint):
    from onboard.devices import build_arm, build_base, build_cameras
    from onboard.runtime import Devices, Runtime, run_event_loop

    cameras = [
        {"name": c, "driver": "standin", "width": 64, "height": 48, "fps": 30} for c in ("front", "wrist")
    ]
    config = Config.model_validate(
        {
            "robot": {"cameras": cameras},
            "policy": {"engine": "torch", "bundle": str(checkpoint), "instruction": "go"},
        }
    )
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    result = run_event_loop(Runtime(config, devices, build_engine(config)).run(2.0))
    assert result["exit_reason"] == "duration"
    assert result["chunks"] >= 2 and result["inference_failures"] == 0 and result["device_errors"] == 0
