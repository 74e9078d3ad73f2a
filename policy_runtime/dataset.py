"""Recorded episodes for training: a LeRobot-style directory, read into chunk samples.

Layout of a dataset directory:

    meta.json                   {"fps": 15.0, "action_layout": [names...], "proprio_layout": [names...],
                                 "cameras": ["front", "wrist"]}
    data.parquet                one row per frame, columns:
                                  episode_index  int64
                                  frame_index    int64    0, 1, ... within the episode
                                  timestamp      float64  seconds since the episode started
                                  observation.state  list<float32>  proprio vector, layout meta.proprio_layout
                                  action         list<float32>  action vector (SI units), layout meta.action_layout
                                  task           string   the instruction; several tasks may share one dataset
    images/episode_{i:06d}.{camera}.npy   (T, H, W, 3) uint8 RGB, one array per episode and camera,
                                row k is the frame of frame_index k

A sample is frame k of an episode: its proprio, its state delta (proprio k minus proprio k-1, zero at k = 0 and on goal.*;
`policy_runtime.preprocess.state_delta`), its instruction, its images (and, for a policy that keeps an anchor
image, its episode's frame 0 of each camera), the action chunk k..k+H-1 (past the
episode's end the last action repeats) and the proprio at each of those steps (clamped at the last frame), which
stage 2 (the residual) sees. Normalization: actions to [-1, 1] per channel by the dataset's min/max, proprio to
zero mean and unit variance, the state delta by its std.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.preprocess import policy_images, state_delta

META_FILE = "meta.json"
DATA_FILE = "data.parquet"


def image_path(root: Path, episode: int, camera: str) -> Path:
    return Path(root) / "images" / f"episode_{episode:06d}.{camera}.npy"


@dataclass
class EpisodeRecord:
    """One episode to write: states (T, P), actions (T, d), the instruction and per-camera images (T, H, W, 3)."""

    states: np.ndarray
    actions: np.ndarray
    task: str
    images: dict[str, np.ndarray]


def write_dataset(
    root: Path, episodes: list[EpisodeRecord], fps: float, action_layout: list[str], proprio_layout: list[str]
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cameras = sorted(episodes[0].images) if episodes else []
    columns: dict[str, list] = {
        k: [] for k in ("episode_index", "frame_index", "timestamp", "observation.state", "action", "task")
    }
    for e, ep in enumerate(episodes):
        for k in range(len(ep.actions)):
            columns["episode_index"].append(e)
            columns["frame_index"].append(k)
            columns["timestamp"].append(k / fps)
            columns["observation.state"].append(np.asarray(ep.states[k], np.float32).tolist())
            columns["action"].append(np.asarray(ep.actions[k], np.float32).tolist())
            columns["task"].append(ep.task)
        for cam in cameras:
            np.save(image_path(root, e, cam), np.asarray(ep.images[cam], np.uint8))
    table = pa.table(
        {
            "episode_index": pa.array(columns["episode_index"], pa.int64()),
            "frame_index": pa.array(columns["frame_index"], pa.int64()),
            "timestamp": pa.array(columns["timestamp"], pa.float64()),
            "observation.state": pa.array(columns["observation.state"], pa.list_(pa.float32())),
            "action": pa.array(columns["action"], pa.list_(pa.float32())),
            "task": pa.array(columns["task"], pa.string()),
        }
    )
    pq.write_table(table, root / DATA_FILE)
    meta = {"fps": fps, "action_layout": action_layout, "proprio_layout": proprio_layout, "cameras": cameras}
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return root


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
    _images: dict[tuple[int, str], np.ndarray]

    def __len__(self) -> int:
        return int(self.proprio.shape[0])

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
            current = {c: self._images[(e, c)][k] for c in self.cameras}
            anchors = {c: self._images[(e, c)][0] for c in self.cameras} if anchor_image else {}
            out.append(policy_images(current, anchors, cameras, anchor_image))
        return out

    def images(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices), num_cameras, H, W, 3) uint8 for the given samples."""
        return np.stack(
            [
                np.stack(
                    [self._images[(int(self.episode[i]), cam)][int(self.frame[i])] for cam in self.cameras]
                )
                for i in indices
            ]
        )


def _fail(root: Path, what: str) -> UserError:
    return UserError(f"dataset {root}: {what} (the format is described in policy_runtime/dataset.py)")


def load_dataset(root: Path, horizon: int, with_images: bool = True) -> ChunkDataset:
    import pyarrow.parquet as pq

    root = Path(root)
    if not (root / META_FILE).is_file() or not (root / DATA_FILE).is_file():
        raise _fail(root, f"needs {META_FILE} and {DATA_FILE}")
    meta = json.loads((root / META_FILE).read_text())
    try:
        table = pq.read_table(root / DATA_FILE).to_pydict()
        episodes = np.asarray(table["episode_index"], np.int64)
        frames = np.asarray(table["frame_index"], np.int64)
        states = np.asarray(table["observation.state"], np.float64)
        actions = np.asarray(table["action"], np.float64)
        tasks = list(table["task"])
    except (KeyError, ValueError) as exc:
        raise _fail(root, f"{DATA_FILE} lacks or mangles a column ({exc})") from None
    action_layout, proprio_layout = tuple(meta["action_layout"]), tuple(meta["proprio_layout"])
    if actions.ndim != 2 or actions.shape[1] != len(action_layout):
        raise _fail(root, f"action vectors must all have {len(action_layout)} entries (meta.action_layout)")
    if states.ndim != 2 or states.shape[1] != len(proprio_layout):
        raise _fail(
            root,
            f"observation.state vectors must all have {len(proprio_layout)} entries (meta.proprio_layout)",
        )
    order = np.lexsort((frames, episodes))
    episodes, frames, states, actions = episodes[order], frames[order], states[order], actions[order]
    tasks = [tasks[i] for i in order]
    n = len(order)
    chunks = np.empty((n, horizon, actions.shape[1]))
    future = np.empty((n, horizon, states.shape[1]))
    starts = {e: int(np.searchsorted(episodes, e)) for e in np.unique(episodes)}
    ends = {e: int(np.searchsorted(episodes, e, side="right")) for e in starts}
    for i in range(n):
        e = episodes[i]
        idx = np.minimum(np.arange(i, i + horizon), ends[e] - 1)
        chunks[i] = actions[idx]
        future[i] = states[idx]
    first = np.r_[True, episodes[1:] != episodes[:-1]]  # first frame of each episode (sorted rows)
    delta = state_delta(states, states[np.where(first, np.arange(n), np.arange(n) - 1)], proprio_layout)
    images: dict[tuple[int, str], np.ndarray] = {}
    cameras = tuple(meta.get("cameras", []))
    if with_images:
        for e in starts:
            for cam in cameras:
                path = image_path(root, int(e), cam)
                if not path.is_file():
                    raise _fail(root, f"missing {path.relative_to(root)}")
                images[(int(e), cam)] = np.load(path, mmap_mode="r", allow_pickle=False)
    low, high = actions.min(0), actions.max(0)
    high = np.where(high - low < 1e-6, low + 1e-6, high)
    return ChunkDataset(
        root=root, fps=float(meta.get("fps", 15.0)), action_layout=action_layout, proprio_layout=proprio_layout,
        cameras=cameras, proprio=states, proprio_delta=delta, chunks=chunks, future_proprio=future, tasks=tasks, episode=episodes,
        frame=frames, action_low=low, action_high=high, proprio_mean=states.mean(0), proprio_std=states.std(0) + 1e-6,
        proprio_delta_std=np.maximum(delta.std(0), 1e-3), _images=images,
    )  # fmt: skip
