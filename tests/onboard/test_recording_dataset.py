"""The service's recorded episodes land in a LeRobotDataset v3 under the recording root (issue 20): a run with
`recording.images` on gives a dataset that `load_dataset` reads (each tick's camera frames decode, one row per
tick recorded, the task the operator's `ctl start` instruction), `anchorvla train` trains on it, and LeRobot's
own reader opens it (where .venv-lerobot is built). The replay log stays beside it and still replays."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from anchorvla.cli import main as anchorvla
from anchorvla.errors import UserError
from onboard.episode_dataset import DATASET_DIR, DatasetWorker, EpisodeDataset, _measured_states
from onboard.episode_store import episode_paths, not_in_dataset, video_parts_dir
from policy_runtime.dataset import EpisodeRecord, load_dataset, write_dataset
from tests.onboard import test_service_syscalls as syscalls
from tests.onboard.test_recorder_replay import operate
from tests.service_helpers import REPO, run_serve, short_dir, sim_config, write_config
from tools.replay import replay

INSTRUCTIONS = ("pick up the cup", "wave")
LEROBOT = REPO / ".venv-lerobot"
LEROBOT_SIDE = REPO / "tests/policy_runtime/lerobot_side.py"


@pytest.fixture(scope="module")
def recorded():
    """Two episodes started with `ctl start`: the first stopped by `ctl stop`, the second by the shutdown."""
    d = short_dir()
    config = sim_config(d, recording={"enabled": True, "root": str(d / "episodes"), "images": True})
    steps = [(0.3, "start", INSTRUCTIONS[0]), (1.5, "stop", ""), (0.3, "start", INSTRUCTIONS[1])]
    run_serve(config, 3.5, client=lambda: operate(d / "control.sock", steps))
    add_what_is_left(config, d / "episodes")
    return d / "episodes"


def add_what_is_left(config, root, starts: int = 3) -> None:
    """An episode whose adding the shutdown cut short (past the recorder's CLOSE_S: a loaded machine) is added at
    the next start: start the service (idle: no new episode) until none is left, at most `starts` times."""
    for _ in range(starts):
        if not not_in_dataset(root):
            return
        run_serve(config, 1.0)


def _log_lengths(root) -> list[int]:
    lines = [json.loads(x) for x in (root / "meta" / "episodes.jsonl").read_text().splitlines()]
    return [x["length"] for x in lines]


def test_every_recorded_episode_is_in_the_dataset_tick_for_tick(recorded):
    root = recorded
    assert not_in_dataset(root) == []
    data = load_dataset(root / DATASET_DIR, horizon=4)
    lengths = _log_lengths(root)
    assert len(lengths) == 2 and min(lengths) > 10
    assert [int((data.episode == e).sum()) for e in (0, 1)] == lengths  # a row per tick recorded
    assert [data.tasks[int(np.flatnonzero(data.episode == e)[0])] for e in (0, 1)] == list(INSTRUCTIONS)
    assert data.cameras == ("third_person", "wrist")
    assert data.proprio_layout[-3:] == ("base.vx", "base.vy", "base.wz")
    # the state and action are the replay log's, row for row
    for e in (0, 1):
        log = pq.read_table(episode_paths(root, e)[0]).to_pylist()
        rows = np.flatnonzero(data.episode == e)
        assert np.allclose(data.proprio[rows], [r["observation.state"] for r in log], atol=1e-6)
        assert np.allclose(data.chunks[rows, 0], [r["action"] for r in log], atol=1e-6)


def test_each_tick_has_its_own_camera_frame(recorded):
    """The stand-in cameras show their frame number (30 fps) as a flat grey: at 15 Hz consecutive ticks' frames
    step by 2 on average (mod 256; a late tick makes one step shorter and the next longer), where one image per
    chunk (5 ticks here) would repeat for most ticks."""
    data = load_dataset(recorded / DATASET_DIR, horizon=4)
    rows = np.flatnonzero(data.episode == 0)
    images = data.images(rows)
    assert images.shape == (len(rows), 2, 224, 224, 3)
    grey = np.round(images.reshape(len(rows), 2, -1).mean(axis=2)).astype(int)
    assert np.abs(images.reshape(len(rows), 2, -1) - grey[..., None]).max() <= 2  # flat, within H.264's loss
    steps = np.diff(grey, axis=0) % 256
    assert steps.max() < 20 and 1.6 <= steps.mean() <= 2.4 and np.mean(steps == 0) < 0.4


def test_the_replay_log_still_replays(recorded):
    for index in (0, 1):
        report = replay(episode_paths(recorded, index)[0])
        assert report.frames > 10 and report.identical, report.as_dict()


def test_anchorvla_train_accepts_the_dataset(recorded, tmp_path):
    args = ["train", "--dataset", str(recorded / DATASET_DIR), "--out", str(tmp_path / "policy")]
    args += ["--steps", "2", "--horizon", "4", "--num-anchors", "4", "--batch", "4", "--residual-steps", "2"]
    assert anchorvla([*args, "--threads", "1", "--no-progress"]) == 0
    assert (tmp_path / "policy" / "model.safetensors").is_file()


@pytest.mark.skipif(
    not any(LEROBOT.glob(".built-*")), reason="no .venv-lerobot (tools/lerobot_venv.sh builds it)"
)
def test_lerobot_reads_the_dataset(recorded, tmp_path):
    root = recorded / DATASET_DIR
    env = dict(os.environ, HF_HUB_OFFLINE="1", LD_LIBRARY_PATH=str(LEROBOT / "ffmpeg"), HF_HOME=str(tmp_path))
    done = subprocess.run(
        [str(LEROBOT / "bin/python"), str(LEROBOT_SIDE), "load", str(root), str(tmp_path / "items.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    items = np.load(tmp_path / "items.npz")
    ours = load_dataset(root, horizon=1)
    assert int(items["total_episodes"]) == 2 and len(items["index"]) == sum(_log_lengths(recorded))
    assert np.array_equal(items["observation.state"], ours.proprio.astype(np.float32))
    assert list(items["task"]) == ours.tasks
    frames = ours.images(np.arange(len(ours)))
    for k, cam in enumerate(ours.cameras):
        assert np.abs(items[f"observation.images.{cam}"].astype(int) - frames[:, k]).max() <= 2


def test_an_add_cut_short_after_the_dataset_took_it_is_not_repeated(recorded, tmp_path):
    """A kill between the dataset taking an episode (its meta/episodes row) and the removal of its video parts:
    the next start finds the parts and the index written before the add, and adds nothing."""
    root = tmp_path / "episodes"
    shutil.copytree(recorded, root)
    pending = video_parts_dir(root, 1)
    pending.mkdir(parents=True)
    (pending / "dataset_episode").write_text("1")
    assert EpisodeDataset(root).add(1) == 1
    assert not pending.exists()
    assert len(load_dataset(root / DATASET_DIR, horizon=1, with_images=False)) == sum(_log_lengths(recorded))


def test_an_episode_the_dataset_cannot_take_is_refused_in_one_line(recorded, tmp_path):
    root = tmp_path / "episodes"
    shutil.copytree(recorded, root)
    shutil.rmtree(root / DATASET_DIR)
    other = EpisodeRecord(np.zeros((1, 1)), np.zeros((1, 1)), "elsewhere", {})
    write_dataset(root / DATASET_DIR, [other], 15, ["base.vx"], ["base.vx"])  # another robot's layout
    video_parts_dir(root, 0).mkdir(parents=True)
    with pytest.raises(UserError, match="already holds another recording"):
        EpisodeDataset(root).add(0)
    assert not video_parts_dir(root, 0).exists()  # not tried again at every start: the replay log keeps it


def test_ticks_without_a_measured_state_take_the_nearest_one_before():
    nan = float("nan")
    states = np.array([[nan, 0.0], [1.0, 0.1], [nan, 0.2], [nan, 0.3], [4.0, 0.4]])
    assert np.array_equal(
        _measured_states(states), [[1.0, 0.1], [1.0, 0.1], [1.0, 0.1], [1.0, 0.1], [4.0, 0.4]]
    )
    with pytest.raises(UserError, match="never answered"):
        _measured_states(np.full((3, 2), nan))


def test_the_worker_holds_the_dataset_lock_until_it_ends(tmp_path):
    """So the next start's worker waits for one whose controller was killed while it was adding an episode."""
    worker = DatasetWorker(tmp_path, threading.Event())
    try:
        assert worker.add(0) == {"added": None}  # nothing recorded: nothing to add, but the worker is running
        probe = os.open(tmp_path / ".dataset.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        worker.close()
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its end released it
    os.close(probe)


@syscalls.pytestmark
def test_the_dataset_worker_runs_under_the_units_system_call_filter():
    """The worker process (fork, exec, nice, flock) under deploy/'s SystemCallFilter=, as the service runs it:
    the episode (cut at 1.5 s by max_episode_s) is added while the service runs on."""
    d = short_dir()
    root = d / "episodes"
    config = write_config(
        d / "svc.yaml",
        service={"start_idle": False, "control": {"enabled": False}},
        recording={"enabled": True, "root": str(root), "images": True, "max_episode_s": 1.5},
    )
    proc = syscalls.filtered(
        ["service", "run", "--config", str(config), "--duration", "5"], syscalls.unit_filter()
    )
    _out, err = syscalls.finish(proc, 120)
    assert proc.returncode == 0 and "Operation not permitted" not in err and "Traceback" not in err, err[
        -2000:
    ]
    assert "episode added to the dataset" in err, err[-2000:]
    assert len(load_dataset(root / DATASET_DIR, horizon=1, with_images=False)) == _log_lengths(root)[0] > 10
