"""Our datasets are LeRobotDatasets: LeRobot's own code (lerobot 0.4.4 in .venv-lerobot, tools/lerobot_venv.sh)
opens one we write and decodes its frames; one LeRobot writes for an SO-101 (its units) reads here in ours,
trains and exports. Without the venv those two are skipped; the v2.1 layout, appending and the unit conversion
run here alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from anchorvla.cli import main as cli
from anchorvla.errors import UserError
from drivers.feetech.calibration import ArmCalibration, JointCalibration, default_calibration
from policy_runtime.dataset import DatasetWriter, EpisodeRecord, load_dataset, write_dataset
from policy_runtime.units import LeRobotUnits
from tests.conftest import REPO

VENV = REPO / ".venv-lerobot"
SIDE = REPO / "tests/policy_runtime/lerobot_side.py"
needs_lerobot = pytest.mark.skipif(
    not any(VENV.glob(".built-*")),  # tools/lerobot_venv.sh marks a finished build
    reason="no .venv-lerobot with LeRobot's dataset code: `bash tools/lerobot_venv.sh` builds it (.ci/run does)",
)
ACTIONS = ["base.vx", "base.wz", "arm.gripper"]
PROPRIO = ["arm.shoulder_pan", "arm.gripper", "goal.x", "base.vx"]


def _lerobot(*args: str) -> None:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", LD_LIBRARY_PATH=str(VENV / "ffmpeg"), HF_HOME=str(args[-1]) + ".hf"
    )
    done = subprocess.run(
        [str(VENV / "bin/python"), str(SIDE), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _images(length: int, seed: int) -> np.ndarray:
    """Smooth colour ramps that move with the frame (what H.264 keeps well), (T, 32, 48, 3) uint8."""
    y, x = np.mgrid[0:32, 0:48]
    frames = [
        np.stack([40 + 3 * x + 4 * t, 60 + 4 * y + seed, np.full_like(x, 100 + 10 * seed + t)], -1)
        for t in range(length)
    ]
    return np.clip(frames, 0, 255).astype(np.uint8)


def _episodes(lengths=(9, 6, 11)) -> list[EpisodeRecord]:
    rng = np.random.default_rng(3)
    return [
        EpisodeRecord(
            rng.normal(size=(n, len(PROPRIO))),
            rng.normal(size=(n, len(ACTIONS))),
            ["go left", "go right"][e % 2],
            {"front": _images(n, e), "wrist": _images(n, 7 + e)},
        )  # fmt: skip
        for e, n in enumerate(lengths)
    ]


@needs_lerobot
def test_lerobot_opens_a_dataset_we_write_and_decodes_its_frames(tmp_path):
    episodes = _episodes()
    root = write_dataset(tmp_path / "ours", episodes, 15, ACTIONS, PROPRIO)
    _lerobot("load", str(root), str(tmp_path / "items.npz"))
    items = np.load(tmp_path / "items.npz")
    states = np.concatenate([e.states for e in episodes]).astype(np.float32)
    assert int(items["total_episodes"]) == 3 and len(items["index"]) == len(states)
    assert np.array_equal(items["index"], np.arange(len(states)))
    assert np.array_equal(items["observation.state"], states)
    assert np.array_equal(items["action"], np.concatenate([e.actions for e in episodes]).astype(np.float32))
    assert list(items["task"]) == [e.task for e in episodes for _ in range(len(e.actions))]
    assert np.allclose(items["stats.observation.state.mean"], states.mean(0), atol=1e-5)
    for cam in ("front", "wrist"):
        wrote = np.concatenate([e.images[cam] for e in episodes]).astype(int)
        error = np.abs(items[f"observation.images.{cam}"].astype(int) - wrote)
        assert error.mean() < 2.0 and np.percentile(error, 99) <= 8  # H.264 at crf 18, yuv420p


@needs_lerobot
def test_a_lerobot_so101_dataset_reads_in_our_units_trains_and_exports(tmp_path, capsys):
    calibration = {
        name: {"id": k + 1, "drive_mode": int(name == "wrist_flex"), "homing_offset": 0, "range_min": lo, "range_max": hi}
        for k, (name, lo, hi) in enumerate(
            [("shoulder_pan", 800, 3300), ("shoulder_lift", 900, 3200), ("elbow_flex", 850, 3100),
             ("wrist_flex", 870, 3150), ("wrist_roll", 150, 3900), ("gripper", 2000, 3400)]
        )
    }  # fmt: skip
    calibration_path = tmp_path / "so101_follower.json"
    calibration_path.write_text(json.dumps(calibration))
    root = tmp_path / "so101"
    _lerobot("create", str(root), str(calibration_path))
    ticks = np.load(f"{root}.ticks.npy")
    ours = ArmCalibration({n: JointCalibration(**c) for n, c in calibration.items()})

    data = load_dataset(root, 4, units=LeRobotUnits("degrees", ours))
    joints = tuple(f"arm.{n}" for n in calibration)
    assert (
        data.proprio_layout == joints and data.action_layout == joints and data.cameras == ("front", "wrist")
    )
    # LeRobot normalised ticks with its bus; converted back they are our radians of those ticks.
    np.testing.assert_allclose(data.proprio, ours.ticks_to_rad(ticks[:, :6]), atol=2e-4)
    np.testing.assert_allclose(data.chunks[:, 0], ours.ticks_to_rad(ticks[:, 6:]), atol=2e-4)
    assert "LeRobot's degrees" in data.conversion and "given calibration" in data.conversion
    assert abs(int(data.policy_images(np.array([13]), ("front",), False)[0][0][0, 0, 0]) - 25) <= 2

    checkpoint, bundle = tmp_path / "ckpt", tmp_path / "bundle"
    train = [
        "train",
        "--dataset",
        str(root),
        "--calibration",
        str(calibration_path),
        "--out",
        str(checkpoint),
    ]
    train += ["--horizon", "4", "--num-anchors", "4", "--steps", "3", "--batch", "4", "--residual-steps", "2"]
    assert cli([*train, "--threads", "1", "--no-progress"]) == 0
    assert "note: dataset" in capsys.readouterr().out
    assert cli(["export", str(checkpoint), str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["proprio_layout"] == list(joints)


def test_so101_range_units_and_the_gripper_convert_through_the_calibration():
    calibration = default_calibration()
    lo = np.array([j.range_min for j in calibration.joints.values()], float)
    hi = np.array([j.range_max for j in calibration.joints.values()], float)
    ticks = np.stack([lo, (lo + hi) / 2, hi, lo + 0.25 * (hi - lo)])
    frac = (ticks - lo) / (hi - lo)
    stored = np.where(np.arange(6) == 5, frac * 100, frac * 200 - 100)  # LeRobot: -100..100, gripper 0..100
    from policy_runtime.units import to_si

    feature = {"shape": [6], "names": [f"{n}.pos" for n in calibration.joint_names]}
    names, rad, note = to_si(feature, stored, LeRobotUnits("range"), "test")
    assert names[0] == "arm.shoulder_pan" and "URDF" in note
    np.testing.assert_allclose(rad, calibration.ticks_to_rad(ticks), atol=1e-9)
    with pytest.raises(UserError, match=r"channels \['x.vel'\] declare no unit"):
        to_si({"shape": [1], "names": ["x.vel"]}, np.zeros((1, 1)), LeRobotUnits(), "test")


def test_a_v21_dataset_reads_like_its_v3_original(tmp_path):
    """LeRobot's v2.1 layout (one parquet and one MP4 per episode, jsonl metadata), made from a v3 dataset."""
    import pyarrow.parquet as pq

    from policy_runtime import video

    episodes = _episodes()
    v3 = write_dataset(tmp_path / "v3", episodes, 15, ACTIONS, PROPRIO)
    v21 = tmp_path / "v21"
    info = json.loads((v3 / "meta/info.json").read_text())
    info.update(codebase_version="v2.1", total_chunks=1, total_videos=6,
                data_path="data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                video_path="videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")  # fmt: skip
    (v21 / "meta").mkdir(parents=True)
    (v21 / "meta/info.json").write_text(json.dumps(info))
    tasks = ["go left", "go right"]
    (v21 / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(tasks))
    )
    table = pq.read_table(v3 / "data/chunk-000/file-000.parquet")
    for e, episode in enumerate(episodes):
        path = v21 / info["data_path"].format(episode_chunk=0, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(table.column("episode_index").to_numpy() == e), path)
        for cam, frames in episode.images.items():
            key = f"observation.images.{cam}"
            video.encode(
                frames, v21 / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=e), 15
            )
    a, b = load_dataset(v3, 4), load_dataset(v21, 4)
    assert a.proprio_layout == b.proprio_layout and a.cameras == b.cameras and a.tasks == b.tasks
    assert np.array_equal(a.chunks, b.chunks) and np.array_equal(a.proprio, b.proprio)
    picks = np.array([0, 9, 14, 25])
    assert np.abs(a.images(picks).astype(int) - b.images(picks).astype(int)).max() <= 2


def test_the_writer_appends_to_its_dataset_in_new_files_and_refuses_another_layout(tmp_path):
    episodes = _episodes((5, 4, 6))
    with DatasetWriter(tmp_path, 15, ACTIONS, PROPRIO, ["front", "wrist"]) as writer:
        assert [writer.add_episode(e) for e in episodes[:2]] == [0, 1]
    with DatasetWriter(tmp_path, 15, ACTIONS, PROPRIO, ["wrist", "front"]) as writer:
        wrong = EpisodeRecord(episodes[2].states, episodes[2].actions, "new task", dict(episodes[2].images))
        wrong.images["wrist"] = wrong.images["wrist"][:, :16]  # another image size than the recording's
        with pytest.raises(
            UserError, match=r"camera wrist gave uint8 images \(6, 16, 48, 3\); this episode needs"
        ):
            writer.add_episode(wrong)  # refused before anything is written
        assert writer.add_episode(episodes[2]) == 2
    assert (tmp_path / "data/chunk-000/file-001.parquet").is_file()
    assert (tmp_path / "videos/observation.images.front/chunk-000/file-001.mp4").is_file()
    data = load_dataset(tmp_path, 2)
    assert len(data) == 15 and list(np.unique(data.episode)) == [0, 1, 2]
    info = json.loads((tmp_path / "meta/info.json").read_text())
    assert info["total_episodes"] == 3 and info["total_frames"] == 15 and info["total_tasks"] == 2
    last = data.images(np.array([14]))[0, 0].astype(int)
    assert np.abs(last - episodes[2].images["front"][-1]).mean() < 2
    with pytest.raises(UserError, match=r"already holds another recording: its cameras \['front', 'wrist'\]"):
        DatasetWriter(tmp_path, 15, ACTIONS, PROPRIO, ["front"])
    shutil.rmtree(tmp_path / "videos")
    with pytest.raises(UserError, match="video .* is missing"):
        load_dataset(tmp_path, 2).images(np.array([0]))


def test_files_roll_over_at_their_size_caps_and_the_stats_are_the_datas(tmp_path):
    episodes = _episodes((5, 4, 6))
    with DatasetWriter(tmp_path, 15, ACTIONS, PROPRIO, ["front", "wrist"]) as writer:
        writer.info.update(
            data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6
        )  # every episode a new file
        for episode in episodes:
            writer.add_episode(episode)
    assert len(list((tmp_path / "data/chunk-000").glob("file-*.parquet"))) == 3
    assert len(list((tmp_path / "videos/observation.images.wrist/chunk-000").glob("file-*.mp4"))) == 3
    data = load_dataset(tmp_path, 2)
    for e, episode in enumerate(episodes):
        rows = np.flatnonzero(data.episode == e)
        assert np.abs(data.images(rows)[:, 1].astype(int) - episode.images["wrist"]).mean() < 2
    stats = json.loads((tmp_path / "meta/stats.json").read_text())
    states = np.concatenate([e.states for e in episodes]).astype(np.float32)
    np.testing.assert_allclose(stats["observation.state"]["mean"], states.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], states.std(0), atol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["max"], states.max(0), atol=1e-6)
    assert stats["observation.state"]["count"] == [15] and stats["index"]["max"] == [14]
    pixels = np.concatenate([e.images["front"] for e in episodes]).reshape(-1, 3) / 255
    np.testing.assert_allclose(np.ravel(stats["observation.images.front"]["mean"]), pixels.mean(0), atol=1e-9)
    # Quantiles aggregate as LeRobot's do: the episodes' own, weighted by their frame counts.
    medians = [
        np.quantile(e.images["front"].reshape(-1, 3) / 255, 0.5, 0, method="inverted_cdf") for e in episodes
    ]
    expected = np.average(medians, axis=0, weights=[len(e.actions) for e in episodes])
    np.testing.assert_allclose(np.ravel(stats["observation.images.front"]["q50"]), expected, atol=1e-9)


def test_a_dataset_too_large_to_keep_decoded_reads_frame_by_frame_the_same_frames(tmp_path, monkeypatch):
    from policy_runtime import dataset

    root = write_dataset(tmp_path, _episodes(), 15, ACTIONS, PROPRIO)
    whole = load_dataset(root, 2)
    monkeypatch.setattr(dataset, "FRAME_CACHE_BYTES", 0)
    by_frame = load_dataset(root, 2)
    assert whole._frames.whole_episodes and not by_frame._frames.whole_episodes
    picks = np.random.default_rng(0).permutation(len(whole))  # out of order: every read seeks
    assert np.array_equal(by_frame.images(picks), whole.images(picks))
    assert not by_frame._frames.episodes and len(by_frame._frames.readers) == 2  # one file per camera
