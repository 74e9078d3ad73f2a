"""Recorded episodes for training: LeRobotDataset directories (policy_runtime/lerobot_format.py), written one
episode at a time (policy_runtime/dataset_writer.py) and read into chunk samples.

`load_dataset` reads our own datasets (v3.0, SI units declared per channel) and LeRobot's (v3.0 and v2.1), whose
SO-101 joints it converts from LeRobot's units to ours (policy_runtime/units.py): `shoulder_pan.pos` becomes
`arm.shoulder_pan` in rad. Channels a dataset lacks (a LeRobot arm dataset has no base) are simply not there;
`check_matches` says in one line where a dataset differs from what a checkpoint or bundle expects.

A sample is frame k of an episode: its proprio, its state delta (proprio k minus proprio k-1, zero at k = 0 and on goal.*;
`policy_runtime.preprocess.state_delta`), its instruction, its images (and, for a policy that keeps an anchor
image, its episode's frame 0 of each camera), the action chunk k..k+H-1 (past the
episode's end the last action repeats) and the proprio at each of those steps (clamped at the last frame), which
stage 2 (the residual) sees. Normalization: actions to [-1, 1] per channel by the dataset's min/max, proprio to
zero mean and unit variance, the state delta by its std. Images come from the videos when a sample needs them
(`EpisodeFrames`: whole episodes kept where the dataset fits a memory budget, else frame by frame).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.dataset_writer import DatasetWriter, EpisodeRecord
from policy_runtime.preprocess import policy_images, state_delta
from policy_runtime.units import LeRobotUnits, to_si

__all__ = ["ChunkDataset", "DatasetWriter", "EpisodeRecord", "check_matches", "load_dataset", "write_dataset"]
FRAME_CACHE_BYTES = 4 << 30
GOAL_CHANNELS = ("goal.x", "goal.y", "goal.z")


def write_dataset(
    root: Path,
    episodes: list[EpisodeRecord],
    fps: float,
    action_layout: list[str],
    proprio_layout: list[str],
    robot_type: str | None = None,
) -> Path:
    """All `episodes` into a new dataset at root (cameras: those of the first episode)."""
    cameras = sorted(episodes[0].images) if episodes else []
    extra = {} if robot_type is None else {"robot_type": robot_type}
    with DatasetWriter(root, fps, action_layout, proprio_layout, cameras, **extra) as writer:
        for episode in episodes:
            writer.add_episode(episode)
    return Path(root)


class EpisodeFrames:
    """The frames of each (episode, camera), from the videos. Where all of them decoded fit in `budget` bytes, an
    episode is decoded whole on its first use and kept; otherwise each frame is decoded when asked for, after a
    seek to the keyframe before it (LeRobot's encoder and ours put one every 2 frames), so a large dataset
    trains in little memory."""

    def __init__(
        self, videos: dict[tuple[int, str], tuple[Path, float]], lengths: dict[int, int], fps: float,
        shapes: dict[str, tuple[int, int]], budget: int | None = None,
    ):  # fmt: skip
        self.videos, self.lengths, self.fps = videos, lengths, fps
        total = sum(lengths.values()) * sum(3 * h * w for h, w in shapes.values())
        self.whole_episodes = total <= (FRAME_CACHE_BYTES if budget is None else budget)
        self.episodes: dict[tuple[int, str], np.ndarray] = {}
        self.readers: OrderedDict[Path, object] = OrderedDict()  # open video.Reader, the most recent last

    def frame(self, episode: int, camera: str, k: int) -> np.ndarray:
        from policy_runtime import video

        key = (episode, camera)
        if key not in self.episodes:
            path, start = self.videos[key]
            if not path.is_file():
                raise UserError(f"dataset video {path} is missing (episode {episode}, camera {camera})")
            if not self.whole_episodes:
                return self._reader(path).frames(start + k / self.fps, 1, self.fps)[0]
            self.episodes[key] = video.decode(path, start, self.lengths[episode], self.fps)
        return self.episodes[key][k]

    def _reader(self, path: Path, keep_open: int = 8):
        from policy_runtime import video

        if path in self.readers:
            self.readers.move_to_end(path)
        else:
            self.readers[path] = video.Reader(path)
            if len(self.readers) > keep_open:
                self.readers.popitem(last=False)[1].close()
        return self.readers[path]


@dataclass
class ChunkDataset:
    """Every frame of every episode as a training sample (arrays share the first axis N)."""

    root: Path
    fps: float
    action_layout: tuple[str, ...]
    proprio_layout: tuple[str, ...]
    cameras: tuple[str, ...]
    proprio: np.ndarray  # (N, P)
    proprio_delta: np.ndarray  # (N, P) proprio minus the previous frame's
    chunks: np.ndarray  # (N, H, d) SI units
    future_proprio: np.ndarray  # (N, H, P)
    tasks: list[str]  # (N,)
    episode: np.ndarray  # (N,)
    frame: np.ndarray  # (N,)
    action_low: np.ndarray
    action_high: np.ndarray
    proprio_mean: np.ndarray
    proprio_std: np.ndarray
    proprio_delta_std: np.ndarray
    _frames: EpisodeFrames | None  # None: loaded without images
    conversion: str | None = None  # how stored units were converted to ours, where they were
    goal: np.ndarray | None = None  # (N, 3) normalised goal position, a training label (`with_goal_as_label`)

    def __len__(self) -> int:
        return int(self.proprio.shape[0])

    def without_proprio(self, names: list[str]) -> ChunkDataset:
        """The same samples with the proprio channels `names` left out: a policy trained on it never reads them
        (e.g. the base's measured velocities, which otherwise let it continue the motion it is in instead of
        looking where to go)."""
        unknown = [n for n in names if n not in self.proprio_layout]
        if unknown:
            raise UserError(
                f"proprio channels {unknown} are not in dataset {self.root} ({', '.join(self.proprio_layout)})"
            )
        keep = [i for i, n in enumerate(self.proprio_layout) if n not in names]
        if not keep:
            raise UserError(f"leaving out {names} leaves no proprio channel: keep at least one")
        return replace(
            self, proprio_layout=tuple(self.proprio_layout[i] for i in keep), proprio=self.proprio[:, keep],
            proprio_delta=self.proprio_delta[:, keep], future_proprio=self.future_proprio[..., keep],
            proprio_mean=self.proprio_mean[keep], proprio_std=self.proprio_std[keep],
            proprio_delta_std=self.proprio_delta_std[keep],
        )  # fmt: skip

    def with_goal_as_label(self) -> ChunkDataset:
        """The samples with goal.x/y/z out of the proprio and kept as `goal`, the goal probe's label, normalised to
        zero mean and unit variance: a policy trained on it never reads the goal, it learns to find it."""
        missing = [n for n in GOAL_CHANNELS if n not in self.proprio_layout]
        if missing:
            raise UserError(
                f"dataset {self.root} has no {', '.join(missing)} in its proprio to learn the goal from: record it "
                "with the goal (`anchorvla sim record --task color --goal-label`)"
            )
        goal = self.proprio[:, [self.proprio_layout.index(n) for n in GOAL_CHANNELS]]
        goal = (goal - goal.mean(0)) / (goal.std(0) + 1e-6)
        return replace(self.without_proprio(list(GOAL_CHANNELS)), goal=goal.astype(np.float32))

    def normalize_actions(self, actions: np.ndarray) -> np.ndarray:
        return 2 * (actions - self.action_low) / (self.action_high - self.action_low) - 1

    def normalize_proprio(self, proprio: np.ndarray) -> np.ndarray:
        return (proprio - self.proprio_mean) / self.proprio_std

    def normalize_proprio_delta(self, delta: np.ndarray) -> np.ndarray:
        return delta / self.proprio_delta_std

    def normalized_chunks(self) -> np.ndarray:
        return self.normalize_actions(self.chunks).astype(np.float32)

    def policy_images(
        self, indices: np.ndarray, cameras: tuple[str, ...] | list[str], anchor_image: bool
    ) -> list[list[np.ndarray]]:
        """Per sample, the raw images a policy reads in its order (`preprocess.policy_images`): each camera's frame,
        then, for a policy that keeps an anchor image, each camera's frame 0 of the sample's episode."""
        out = []
        for i in indices:
            e, k = int(self.episode[i]), int(self.frame[i])
            current = {c: self._frame(e, c, k) for c in self.cameras}
            anchors = {c: self._frame(e, c, 0) for c in self.cameras} if anchor_image else {}
            out.append(policy_images(current, anchors, cameras, anchor_image))
        return out

    def images(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), num_cameras, H, W, 3) uint8 for the given samples."""
        return np.stack(
            [
                np.stack([self._frame(int(self.episode[i]), cam, int(self.frame[i])) for cam in self.cameras])
                for i in indices
            ]
        )

    def _frame(self, episode: int, camera: str, k: int) -> np.ndarray:
        if self._frames is None:
            raise ValueError(f"dataset {self.root} was loaded without images (with_images=False)")
        return self._frames.frame(episode, camera, k)


def load_dataset(
    root: Path, horizon: int, with_images: bool = True, units: LeRobotUnits | None = None
) -> ChunkDataset:
    """Every frame of the dataset at root as a sample with its action chunk of `horizon` steps; `units` says how a
    LeRobot SO-101 dataset without declared units stores its joints (default: degrees, the URDF's ranges)."""
    from policy_runtime.lerobot_format import read_dataset

    root = Path(root)
    raw = read_dataset(root)
    units = units or LeRobotUnits()
    proprio_layout, states, note_s = to_si(
        raw.state_feature, raw.states, units, f"dataset {root} observation.state"
    )
    action_layout, actions, note_a = to_si(raw.action_feature, raw.actions, units, f"dataset {root} action")
    episodes, frames, tasks = raw.episode, raw.frame, raw.tasks
    n = len(episodes)
    chunks = np.empty((n, horizon, actions.shape[1]))
    future = np.empty((n, horizon, states.shape[1]))
    starts = {int(e): int(np.searchsorted(episodes, e)) for e in np.unique(episodes)}
    ends = {e: int(np.searchsorted(episodes, e, side="right")) for e in starts}
    if any(not np.array_equal(frames[starts[e] : ends[e]], np.arange(ends[e] - starts[e])) for e in starts):
        raise UserError(f"dataset {root}: an episode's frame_index is not 0, 1, 2, ...")
    for i in range(n):
        idx = np.minimum(np.arange(i, i + horizon), ends[int(episodes[i])] - 1)
        chunks[i] = actions[idx]
        future[i] = states[idx]
    first = np.r_[True, episodes[1:] != episodes[:-1]]  # first frame of each episode (sorted rows)
    delta = state_delta(states, states[np.where(first, np.arange(n), np.arange(n) - 1)], proprio_layout)
    lengths = {e: ends[e] - starts[e] for e in starts}
    frame_source = EpisodeFrames(raw.videos, lengths, raw.fps, raw.shapes) if with_images else None
    low, high = actions.min(0), actions.max(0)
    high = np.where(high - low < 1e-6, low + 1e-6, high)
    return ChunkDataset(
        root=root, fps=raw.fps, action_layout=action_layout, proprio_layout=proprio_layout,
        cameras=raw.cameras, proprio=states, proprio_delta=delta, chunks=chunks, future_proprio=future, tasks=tasks, episode=episodes,
        frame=frames, action_low=low, action_high=high, proprio_mean=states.mean(0), proprio_std=states.std(0) + 1e-6,
        proprio_delta_std=np.maximum(delta.std(0), 1e-3), _frames=frame_source,
        conversion=" | ".join(dict.fromkeys(x for x in (note_s, note_a) if x)) or None,
    )  # fmt: skip


def check_matches(
    data: ChunkDataset, what: str, action_layout=None, proprio_layout=None, cameras=None
) -> None:
    """One line naming every difference between the dataset's channels and cameras and those `what` (a checkpoint,
    a bundle) expects; a None list is not compared."""
    diffs = []
    for label, have, want in (
        ("action channels", data.action_layout, action_layout),
        ("proprio channels", data.proprio_layout, proprio_layout),
        ("cameras", data.cameras, cameras),
    ):
        if want is None or list(have) == list(want):
            continue
        missing = [x for x in want if x not in have]
        extra = [x for x in have if x not in want]
        parts = [f"lacks {', '.join(missing)}"] * bool(missing) + [f"has {', '.join(extra)} besides"] * bool(
            extra
        )
        diffs.append(f"{label}: {'; '.join(parts) or f'in another order ({list(have)})'}")
    if diffs:
        raise UserError(
            f"dataset {data.root} does not match {what}: {' | '.join(diffs)} (use a dataset of the same robot and cameras)"
        )
