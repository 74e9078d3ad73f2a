"""The goal probe (issue 22): colour-task recordings keep the goal as a label (`sim record --goal-label`), and
`anchorvla train --goal-probe W` takes it out of the policy's input and trains a probe on the ActionQuery tokens to
predict it, so the backbone must find the named target in the images. Nothing onboard reads the goal or the probe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anchorvla.cli import main as cli
from policy_runtime.dataset import load_dataset
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.config import ArchitectureConfig
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.model.training import stage1_loss
from sim.record import PROPRIO_LAYOUT, PROPRIO_NO_GOAL

TRAIN = ["--architecture", "tiny", "--horizon", "4", "--num-anchors", "4", "--batch", "4", "--steps", "3"]
TRAIN += ["--residual-steps", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Two touch_color episodes recorded with the goal as a label."""
    out = tmp_path_factory.mktemp("goal") / "demos"
    args = ["sim", "record", "--task", "touch_color", "--episodes", "2", "--image-size", "32", "--goal-label"]
    assert cli([*args, "--out", str(out)]) == 0
    return out


def test_goal_label_keeps_the_goal_in_a_colour_recording(labelled):
    data = load_dataset(labelled, horizon=4, with_images=False)
    assert data.proprio_layout == PROPRIO_LAYOUT
    goal = data.proprio[:, [data.proprio_layout.index(c) for c in ("goal.x", "goal.y", "goal.z")]]
    assert np.all(np.linalg.norm(goal, axis=1) > 0.05)  # the named target's position, not zeros
    as_label = data.with_goal_as_label()
    assert as_label.proprio_layout == PROPRIO_NO_GOAL and as_label.goal.shape == (len(data), 3)
    assert np.allclose(as_label.goal.mean(0), 0, atol=1e-5)  # normalised


def test_train_with_the_goal_probe_makes_a_policy_that_never_reads_the_goal(labelled, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert cli(["train", "--dataset", str(labelled), "--out", str(out), "--goal-probe", "1", *TRAIN]) == 0
    assert "goal" in capsys.readouterr().out.split("stage 1:")[1].splitlines()[0]  # the probe's term is logged
    policy, config = load_checkpoint(out)
    assert config.proprio_layout == list(PROPRIO_NO_GOAL) and config.architecture.goal_probe
    assert config.provenance["goal_probe_weight"] == 1.0 and policy.goal_probe is not None
    # exported, the bundle reads no goal either (the probe is not in its graphs)
    assert cli(["export", str(out), str(tmp_path / "bundle")]) == 0
    manifest = json.loads((tmp_path / "bundle/manifest.json").read_text())
    assert not any(c.startswith("goal.") for c in manifest["runtime"]["proprio_layout"])
    # resumed, the run takes the goal out of the proprio again from the checkpoint
    assert cli(["train", "--dataset", str(labelled), "--out", str(out), *TRAIN, "--steps", "4", "--resume"]) == 0


def test_goal_probe_needs_a_recording_with_the_goal(tmp_path, capsys):
    plain = tmp_path / "demos"
    assert cli(["sim", "record", "--task", "touch_color", "--episodes", "1", "--image-size", "32"]
               + ["--out", str(plain)]) == 0  # fmt: skip
    capsys.readouterr()
    assert cli(["train", "--dataset", str(plain), "--out", str(tmp_path / "c"), "--goal-probe", "1", *TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert "goal.x" in err and "--goal-label" in err and "\n" not in err


def test_the_probe_learns_the_goal_through_the_backbone():
    # On a fixed batch whose goal is a function of the image, the probe's error falls as the backbone and the
    # probe train on it; the probe is part of what stage 1 trains and the architecture refuses it without a VLM.
    torch.manual_seed(0)
    arch = tiny_architecture(action_dim=3, proprio_dim=2, horizon=4, num_anchors=4)
    policy = AnchorVLAPolicy(arch.model_copy(update={"goal_probe": True}))
    assert {id(p) for p in policy.goal_probe.parameters()} <= {id(p) for p in policy.main_parameters()}
    images = torch.randn(8, 2, 3, 32, 32)
    ids, mask = policy.tokenizer.encode(["touch the red marker"] * 8, arch.backbone.max_instruction_tokens)
    batch = {
        "proprio": torch.zeros(8, 2), "actions": torch.rand(8, 4, 3) * 2 - 1, "images": images,
        "input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
        "goal": images[:, 0, :3].mean(dim=(2, 3)) * 3,  # (8, 3): what the probe must read out of the images
    }  # fmt: skip
    optimizer = torch.optim.AdamW(policy.main_parameters(), lr=3e-3)
    errors = []
    for _ in range(60):
        loss, logs = stage1_loss(policy, batch, torch.Generator().manual_seed(0), goal_weight=10.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(logs["goal"])
    assert errors[-1] < 0.3 * errors[0]
    with pytest.raises(ValueError, match="goal_probe reads the ActionQuery tokens"):
        ArchitectureConfig.model_validate(dict(arch.model_dump(), backbone=None, goal_probe=True))
