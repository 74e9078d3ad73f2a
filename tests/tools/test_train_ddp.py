"""`anchorvla train` under `torchrun --nproc-per-node 2` on CPU (gloo, loopback): two processes with half the
global batch each train a tiny policy to the same weights and the same logged loss as one process with the whole
batch. The regression head makes no random draws, so the two runs see the same numbers up to float rounding."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policy_runtime.model.config import ArchitectureConfig, HeadConfig, ResidualConfig
from tools.obstacle_task import write_demo_dataset

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: float = 90) -> str:
    """Run `cmd` in its own process group and end the whole group (torchrun and its workers) whatever happens."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    return out


def _stage_figures(out: str) -> dict[str, dict[str, float]]:
    """{'stage 1': {'recon': ...}, ...} from the trainer's end-of-stage lines."""
    found = {}
    for stage, figures in re.findall(r"^(stage \d): (.*) \(mean of its last", out, re.MULTILINE):
        found[stage] = {k: float(v) for k, v in (pair.split(" ") for pair in figures.split(", "))}
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("ddp"), episodes=4, seed=3)


def _architecture(directory: Path, mode: str) -> Path:
    head = HeadConfig(mode=mode, horizon=4, action_dim=2, proprio_dim=3, cond_dim=16, dim=16, depth=1, heads=2,
                      num_anchors=4)  # fmt: skip
    arch = directory / f"{mode}.json"
    arch.write_text(
        ArchitectureConfig(backbone=None, head=head, residual=ResidualConfig(hidden=8)).model_dump_json()
    )
    return arch


def _torchrun() -> list[str]:
    return [
        str(TORCHRUN),
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
    ]


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not in the venv")
def test_two_processes_train_to_the_loss_of_one_with_the_same_global_batch(dataset, tmp_path):
    arch = _architecture(tmp_path, "regression")
    train = ["-m", "anchorvla.cli", "train", "--dataset", str(dataset), "--architecture", str(arch),
             "--horizon", "4", "--batch", "8", "--steps", "12", "--residual-steps", "4", "--lr", "3e-3",
             "--threads", "1", "--no-progress", "--seed", "5"]  # fmt: skip
    one = _run([sys.executable, *train, "--out", str(tmp_path / "one")])
    two = _run([*_torchrun(), *train, "--out", str(tmp_path / "two")])
    figures_one, figures_two = _stage_figures(one), _stage_figures(two)
    assert figures_one.keys() == {"stage 1", "stage 3"} and figures_two.keys() == figures_one.keys()
    for stage, figures in figures_one.items():
        assert figures.keys() == figures_two[stage].keys()
        for name, value in figures.items():
            assert figures_two[stage][name] == pytest.approx(value, rel=1e-3, abs=1e-4), (stage, name)
    assert two.count("wrote checkpoint") == 1  # rank 0 alone writes
    # The two checkpoints plan the same chunks and corrections on every sample of the dataset. (Raw weights are
    # not compared: a key bias of the attention has no gradient but rounding noise, which Adam scales to full
    # steps in either direction, without any effect on the outputs.)
    outputs = [_outputs(tmp_path / name, dataset) for name in ("one", "two")]
    for a, b in zip(*outputs, strict=True):
        assert np.allclose(a, b, atol=1e-4)
    untrained = _outputs(tmp_path / "one", dataset, steps_taken=False)
    assert not np.allclose(untrained[0], outputs[0][0], atol=1e-2)  # training moved them: not a trivial match


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not in the venv")
def test_a_resumed_two_process_run_continues_each_ranks_noise(dataset, tmp_path):
    """The anchored head draws noise on every rank, each its own stream: stopped and resumed, the two processes
    train exactly as without the stop (each rank's stream was saved, not rank 0's alone)."""
    arch = _architecture(tmp_path, "anchored")
    train = ["-m", "anchorvla.cli", "train", "--dataset", str(dataset), "--architecture", str(arch),
             "--horizon", "4", "--num-anchors", "4", "--batch", "8", "--steps", "6", "--residual-steps", "0",
             "--lr", "3e-3", "--threads", "1", "--no-progress", "--seed", "5"]  # fmt: skip
    whole = _run([*_torchrun(), *train, "--out", str(tmp_path / "whole")])
    _run([*_torchrun(), *train, "--out", str(tmp_path / "resumed"), "--stop-after", "3"])
    resumed = _run([*_torchrun(), *train, "--out", str(tmp_path / "resumed"), "--resume"])
    assert "mean of its last 6 steps" in whole and "mean of its last 3 steps" in resumed
    a, b = _outputs(tmp_path / "whole", dataset), _outputs(tmp_path / "resumed", dataset)
    assert np.array_equal(a[0], b[0])


def _outputs(checkpoint: Path, dataset: Path, steps_taken: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(planned chunks, residual corrections at j = 1) of the checkpoint (or of its untrained start, the same
    architecture built from the seed) on every sample of the dataset."""
    import torch

    from policy_runtime.dataset import load_dataset
    from policy_runtime.model.checkpoint import load_checkpoint
    from policy_runtime.model.policy import AnchorVLAPolicy

    policy, config = load_checkpoint(checkpoint)
    if not steps_taken:
        torch.manual_seed(5)
        policy = AnchorVLAPolicy(config.architecture).eval()
    data = load_dataset(dataset, horizon=4, with_images=False)
    mean, std = np.asarray(config.normalization.proprio_mean), np.asarray(config.normalization.proprio_std)
    proprio = torch.tensor((data.proprio - mean) / std, dtype=torch.float32)
    with torch.no_grad():
        chunk, _, _, _, context = policy(proprio, torch.zeros(policy.head.noise_shape(len(proprio))))
        j = torch.ones(len(proprio), dtype=torch.long)
        correction = policy.residual(proprio, context, chunk[:, 1], j)
    return chunk.numpy(), correction.numpy()


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not in the venv")
def test_two_processes_train_a_policy_with_a_gripper_head_through_every_stage(tmp_path):
    """The gripper head learns in stage 4 only: in the earlier stages it is frozen, or DDP finds it without gradient
    and stops the run."""
    from tests.bundle_helpers import write_demo_dataset as write_robot_dataset

    data = write_robot_dataset(  # the robot's action layout, arm.gripper in it
        tmp_path / "data", seed=5, episodes=2, frames=6
    )
    train = ["-m", "anchorvla.cli", "train", "--dataset", str(data), "--horizon", "4", "--num-anchors", "2",
             "--steps", "3", "--residual-steps", "1", "--gripper-head", "arm.gripper", "--gripper-steps", "2",
             "--batch", "4", "--threads", "1", "--no-progress", "--out", str(tmp_path / "ckpt")]  # fmt: skip
    out = _run([*_torchrun(), *train])
    assert _stage_figures(out).keys() == {"stage 1", "stage 3", "stage 4"}
    assert "grip_bce" in _stage_figures(out)["stage 4"]
