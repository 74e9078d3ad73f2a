"""Dataset -> anchors -> two-stage training -> checkpoint, on the demo obstacle dataset with a tiny model on CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from anchorvla.cli import main as cli
from anchorvla.errors import UserError
from policy_runtime.dataset import load_dataset
from policy_runtime.model.checkpoint import load_checkpoint
from tools.obstacle_task import write_demo_dataset

TRAIN = [
    "--horizon",
    "4",
    "--num-anchors",
    "4",
    "--batch",
    "4",
    "--residual-steps",
    "2",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("ds"), episodes=6, seed=1)


def _weights(directory):
    return {
        **load_file(str(directory / "model.safetensors")),
        **load_file(str(directory / "residual.safetensors")),
    }


def test_dataset_loads_chunks_tasks_and_images(dataset):
    data = load_dataset(dataset, horizon=4)
    assert data.cameras == ("follow", "front") and data.chunks.shape[1:] == (4, 2)
    assert len(set(data.tasks)) == 3
    assert data.images(np.array([0, 5])).shape == (2, 2, 32, 32, 3)
    info = json.loads((dataset / "meta/info.json").read_text())
    assert (
        info["codebase_version"] == "v3.0"
        and info["features"]["observation.images.front"]["dtype"] == "video"
    )
    # past an episode's end the chunk repeats its last action
    last = np.flatnonzero(data.episode == 0)[-1]
    assert np.all(data.chunks[last] == data.chunks[last][0])
    assert np.allclose(data.normalized_chunks().min(), -1) and np.allclose(data.normalized_chunks().max(), 1)


def test_anchors_command_writes_the_vocabulary_and_reports_coverage(dataset, tmp_path, capsys):
    assert (
        cli(
            [
                "anchors",
                "--dataset",
                str(dataset),
                "--out",
                str(tmp_path),
                "--num-anchors",
                "4",
                "--horizon",
                "4",
            ]
        )
        == 0
    )
    assert "coverage" in capsys.readouterr().out
    anchors = load_file(str(tmp_path / "anchors.safetensors"))["anchors"]
    meta = json.loads((tmp_path / "anchors.json").read_text())
    assert anchors.shape == (4, 4, 2) and sum(meta["cluster_sizes"]) == len(
        load_dataset(dataset, 4, with_images=False)
    )


def test_same_seed_same_weights_and_resume_continues_exactly(dataset, tmp_path):
    base = ["train", "--dataset", str(dataset), "--steps", "4", "--save-every", "2", *TRAIN]
    assert cli([*base, "--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert cli([*base, "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # Interrupted after 3 steps then resumed: the same weights as the uninterrupted run.
    assert cli([*base, "--out", str(tmp_path / "c"), "--seed", "7", "--stop-after", "3"]) == 0
    assert cli([*base, "--out", str(tmp_path / "c"), "--seed", "7", "--resume"]) == 0
    c = _weights(tmp_path / "c")
    assert all(np.array_equal(a[k], c[k]) for k in a)
    # Another seed trains other weights.
    assert cli([*base, "--out", str(tmp_path / "d"), "--seed", "8"]) == 0
    d = _weights(tmp_path / "d")
    assert not all(np.array_equal(a[k], d[k]) for k in a)
    _, config = load_checkpoint(tmp_path / "a")
    assert (
        config.anchors.count == 4 and config.provenance["seed"] == 7 and len(config.provenance["tasks"]) == 3
    )
    assert config.action_layout == ["base.vx", "base.vy"]


def _edited_info(src, dst, edit) -> None:
    """A copy of dataset `src` at `dst` whose meta/info.json went through `edit`."""
    shutil.copytree(src, dst)
    info = json.loads((dst / "meta/info.json").read_text())
    edit(info["features"])
    (dst / "meta/info.json").write_text(json.dumps(info))


def test_bad_dataset_or_resume_without_state_is_one_clear_error(dataset, tmp_path):
    with pytest.raises(UserError, match="no meta/info.json"):
        load_dataset(tmp_path, 4)

    def drop_a_channel(features):
        state = features["observation.state"]
        state.update(shape=[3], names=state["names"][:3], units=state["units"][:3])

    _edited_info(dataset, tmp_path / "short", drop_a_channel)
    with pytest.raises(UserError, match="every observation.state row must have 3 values"):
        load_dataset(tmp_path / "short", 4)

    def in_degrees(features):
        features["action"]["units"] = ["deg", "m/s"]

    _edited_info(dataset, tmp_path / "degrees", in_degrees)
    with pytest.raises(UserError, match=r"units \['base.vx \[deg\]'\] are not one SI unit per channel"):
        load_dataset(tmp_path / "degrees", 4)
    assert cli(["train", "--dataset", str(dataset), "--out", str(tmp_path / "x"), "--resume", *TRAIN]) == 2


def test_cosine_schedule_warms_up_decays_and_a_resumed_run_stays_on_its_curve(dataset, tmp_path):
    from tools.train import stage_lr

    lrs = [stage_lr(1e-3, "cosine", step, 100) for step in range(100)]
    # Two warm-up steps to the peak, then a strict decay to about 5% of it at the stage's end.
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == lrs[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.05e-3, rel=0.05)
    assert stage_lr(1e-3, "constant", 57, 100) == 1e-3
    base = ["train", "--dataset", str(dataset), "--steps", "4", "--seed", "3", "--lr-schedule", "cosine"]
    base += TRAIN
    assert cli([*base, "--out", str(tmp_path / "a")]) == 0
    assert cli([*base, "--out", str(tmp_path / "b"), "--stop-after", "3"]) == 0
    assert cli([*base, "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # The schedule is applied: the same run at a constant rate trains other weights.
    constant = [arg for arg in base if arg not in ("--lr-schedule", "cosine")]
    assert cli([*constant, "--out", str(tmp_path / "c")]) == 0
    c = _weights(tmp_path / "c")
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_residual_from_trains_a_new_residual_alone_normalised_as_the_checkpoint(dataset, tmp_path, capsys):
    source = tmp_path / "source"
    assert cli(["train", "--dataset", str(dataset), "--out", str(source), "--steps", "2", *TRAIN]) == 0
    other = write_demo_dataset(tmp_path / "other", episodes=3, seed=5)  # other data, other statistics
    assert not np.allclose(load_dataset(other, 4).proprio_mean, load_dataset(dataset, 4).proprio_mean)
    out = tmp_path / "residual"
    args = ["train", "--dataset", str(other), "--out", str(out), "--residual-from", str(source), *TRAIN]
    assert cli(args) == 0
    main = [load_file(str(d / "model.safetensors")) for d in (source, out)]
    assert main[0].keys() == main[1].keys() and all(np.array_equal(main[0][k], main[1][k]) for k in main[0])
    residual = [load_file(str(d / "residual.safetensors")) for d in (source, out)]
    last = "mlp.4.weight"  # zero at the start of a residual stage: it trained from there, on the other data
    assert np.abs(residual[1][last]).max() > 0 and not np.array_equal(residual[0][last], residual[1][last])
    (_, src), (_, new) = load_checkpoint(source), load_checkpoint(out)
    assert new.normalization == src.normalization and new.anchors == src.anchors
    assert new.provenance["residual_from"] == str(source) and new.provenance["residual_dataset"] == str(other)
    # A dataset of another robot (other channels) is one clear error naming what differs.
    bad = tmp_path / "bad"
    _edited_info(other, bad, lambda f: f["observation.state"]["names"].__setitem__(1, "pos.z"))
    capsys.readouterr()
    assert (
        cli(
            [
                "train",
                "--dataset",
                str(bad),
                "--out",
                str(tmp_path / "x"),
                "--residual-from",
                str(source),
                *TRAIN,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "does not match the checkpoint: proprio channels: lacks pos.y; has pos.z besides" in err
    assert "\n" not in err


def test_proprio_exclude_trains_a_policy_that_never_reads_those_channels(dataset, tmp_path, capsys):
    out = tmp_path / "ckpt"
    args = ["train", "--dataset", str(dataset), "--out", str(out), "--steps", "2", *TRAIN]
    assert cli([*args, "--proprio-exclude", "goal.x,goal.y"]) == 0
    policy, config = load_checkpoint(out)
    assert config.proprio_layout == ["pos.x", "pos.y"] and config.architecture.head.proprio_dim == 2
    assert len(config.normalization.proprio_mean) == 2 and config.provenance["proprio_excluded"] == ["goal.x", "goal.y"]
    full = load_dataset(dataset, 4, with_images=False)
    assert np.array_equal(full.without_proprio(["goal.x", "goal.y"]).proprio, full.proprio[:, :2])

    capsys.readouterr()
    assert cli([*args, "--out", str(tmp_path / "bad"), "--proprio-exclude", "goal.z"]) == 2
    err = capsys.readouterr().err.strip()
    assert "goal.z" in err and "pos.x, pos.y, goal.x, goal.y" in err and "\n" not in err
