"""`anchorvla view`: an episode of a LeRobot dataset (written by our writer) logged into rerun, every frame's images,
state and actions; a missing episode is one line. Needs rerun-sdk (the liveview extra), skipped without it."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.cli import main as cli
from policy_runtime.dataset import EpisodeRecord, load_dataset, write_dataset

rr = pytest.importorskip("rerun", reason="rerun-sdk is the optional extra 'liveview'")
CHANNELS = [
    "base.vx",
    "base.vy",
    "base.wz",
    *(
        f"arm.{j}"
        for j in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    ),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    episodes = [
        EpisodeRecord(rng.normal(size=(n, 9)).astype(np.float32), rng.normal(size=(n, 9)).astype(np.float32), "wave",
                      {"front": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)})
        for n in (6, 12)
    ]  # fmt: skip
    return write_dataset(tmp_path_factory.mktemp("view") / "ds", episodes, 15, CHANNELS, CHANNELS)


def test_every_frame_of_the_episode_is_logged(dataset):
    from tools.view import log_episode

    sizes = {}
    for episode in (0, 1):
        rec = rr.RecordingStream("test-view")
        memory = rec.memory_recording()
        assert log_episode(rec, load_dataset(dataset, 1), episode) == (6, 12)[episode]
        rec.flush()
        sizes[episode] = len(memory.drain_as_bytes())
    # Six more frames: at least their six more images (random pixels do not compress) go into the recording.
    assert sizes[1] - sizes[0] > 6 * 32 * 32 * 3


def test_view_saves_an_rrd_and_refuses_a_missing_episode(dataset, tmp_path, capsys):
    assert cli(["view", str(dataset), "--episode", "1", "--save", str(tmp_path / "e.rrd")]) == 0
    assert (tmp_path / "e.rrd").stat().st_size > 32 * 32 * 3
    assert cli(["view", str(dataset), "--episode", "5", "--save", str(tmp_path / "x.rrd")]) == 2
    assert "has no episode 5" in capsys.readouterr().err
