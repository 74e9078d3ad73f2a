"""Writing a LeRobotDataset v3.0 one episode at a time (policy_runtime/lerobot_format.py has the layout).

`DatasetWriter.add_episode` encodes the episode's videos and appends its rows; after each call the directory is a
complete dataset (every file written whole, through a temporary name), so a recording stopped between episodes
loses nothing. Opening a writer on an existing dataset of the same layouts, cameras and rate appends to it, in
new files (as LeRobot does when it resumes). Encoding takes milliseconds per frame: call `add_episode` off the
control loop.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime import lerobot_format as fmt
from policy_runtime import video
from policy_runtime.units import channel_unit

DEFAULT_ROBOT_TYPE = "go2_so101"


@dataclass
class EpisodeRecord:
    """One episode to write: states (T, P), actions (T, d) in SI units, the instruction and per-camera images
    (T, H, W, 3) uint8 RGB."""

    states: np.ndarray
    actions: np.ndarray
    task: str
    images: dict[str, np.ndarray]


class DatasetWriter:
    def __init__(
        self,
        root: Path,
        fps: float,
        action_layout: list[str],
        proprio_layout: list[str],
        cameras: list[str],
        robot_type: str = DEFAULT_ROBOT_TYPE,
        crf: int = video.CRF,
    ):
        if fps <= 0 or abs(fps - round(fps)) > 1e-9:
            raise UserError(
                f"dataset {root}: fps {fps} must be a whole number (LeRobotDataset stores an integer)"
            )
        self.root, self.fps, self.crf = Path(root), int(round(fps)), crf
        self.root.mkdir(parents=True, exist_ok=True)
        self.closed = False
        self.cameras = list(cameras)
        self.features = {
            fmt.ACTION: fmt.vector_feature(action_layout, [channel_unit(c) for c in action_layout]),
            fmt.STATE: fmt.vector_feature(proprio_layout, [channel_unit(c) for c in proprio_layout]),
        }
        self.info = fmt.new_info(self.fps, robot_type, self.features, has_video=bool(self.cameras))
        self.tasks: list[str] = []
        self.episodes: list[dict] = []  # meta/episodes rows
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self.data_file = (0, 0)
        self.video_file = {cam: (0, 0) for cam in self.cameras}
        self.video_frames = {cam: 0 for cam in self.cameras}  # frames already in the current video file
        self.data_rows: list = []  # tables of the current data file
        if (self.root / fmt.INFO).exists():
            self._resume()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _resume(self) -> None:
        """Append to the dataset already at root: same layouts, cameras and rate, or one line saying what differs."""
        import pyarrow.parquet as pq

        info = fmt.read_info(self.root)
        old = info["features"]
        differs = [
            f"{label} {have} (this recording: {want})"
            for label, have, want in (
                ("fps", info["fps"], self.fps),
                ("action channels", old.get(fmt.ACTION, {}).get("names"), self.features[fmt.ACTION]["names"]),
                ("proprio channels", old.get(fmt.STATE, {}).get("names"), self.features[fmt.STATE]["names"]),
                ("cameras", sorted(k[len(fmt.IMAGE_PREFIX):] for k in old if k.startswith(fmt.IMAGE_PREFIX)),
                 sorted(self.cameras)),
            )
            if have != want
        ]  # fmt: skip
        if differs or not info["codebase_version"].startswith("v3"):
            raise UserError(
                f"dataset {self.root} already holds another recording: its {'; '.join(differs) or info['codebase_version']}"
                " (write to a new directory)"
            )
        paths = sorted((self.root / "meta/episodes").glob("*/*.parquet"))
        if len(paths) != 1:
            raise UserError(
                f"dataset {self.root}: {len(paths)} episode metadata files; appending needs exactly one"
            )
        self.info = info
        self.features = {k: v for k, v in old.items() if k not in fmt.INDEX_FEATURES}
        self.episodes = pq.read_table(paths[0]).to_pylist()
        self.tasks = fmt.read_tasks(self.root, info)
        self.stats = fmt.stats_from_json(json.loads((self.root / fmt.STATS).read_text()))
        last = self.episodes[-1]
        self.data_file = fmt.next_file(last["data/chunk_index"], last["data/file_index"])
        for cam in self.cameras:
            key = f"videos/{fmt.IMAGE_PREFIX}{cam}"
            self.video_file[cam] = fmt.next_file(last[f"{key}/chunk_index"], last[f"{key}/file_index"])

    def add_episode(self, episode: EpisodeRecord) -> int:
        """Write one episode; returns its episode_index. A refused episode writes nothing."""
        import pyarrow as pa

        if self.closed:
            raise ValueError(f"dataset {self.root}: add_episode after close()")
        states, actions, images = self._checked(episode)
        length, (p, d) = len(actions), (states.shape[1], actions.shape[1])
        index = len(self.episodes)
        start = self.episodes[-1]["dataset_to_index"] if self.episodes else 0
        if episode.task not in self.tasks:
            self.tasks.append(episode.task)
            fmt.write_tasks(self.root, self.tasks)
        row = {"episode_index": index, "tasks": [episode.task], "length": length}
        ep_stats = {fmt.ACTION: fmt.vector_stats(actions), fmt.STATE: fmt.vector_stats(states)}
        for cam, frames in images.items():
            row.update(self._add_video(cam, frames))
            ep_stats[fmt.IMAGE_PREFIX + cam] = fmt.image_stats(frames)
        frame_index = np.arange(length)
        columns = {
            fmt.ACTION: pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1), pa.float32()), d),
            fmt.STATE: pa.FixedSizeListArray.from_arrays(pa.array(states.reshape(-1), pa.float32()), p),
            "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
            "frame_index": pa.array(frame_index, pa.int64()),
            "episode_index": pa.array(np.full(length, index), pa.int64()),
            "index": pa.array(start + frame_index, pa.int64()),
            "task_index": pa.array(np.full(length, self.tasks.index(episode.task)), pa.int64()),
        }
        for name, values in columns.items():
            if name in fmt.INDEX_FEATURES:
                ep_stats[name] = fmt.vector_stats(values.to_numpy())
        row.update(self._add_rows(pa.table(columns)))
        row.update({"dataset_from_index": start, "dataset_to_index": start + length,
                    "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})  # fmt: skip
        for feature, s in ep_stats.items():
            row.update({f"stats/{feature}/{k}": np.asarray(v).tolist() for k, v in s.items()})
        self.episodes.append(row)
        fmt.write_parquet(
            self.root / fmt.EPISODES.format(chunk_index=0, file_index=0), pa.Table.from_pylist(self.episodes)
        )
        self.stats = {
            f: fmt.aggregate_stats([self.stats[f], s]) if f in self.stats else s for f, s in ep_stats.items()
        }
        fmt.write_json(self.root / fmt.STATS, fmt.stats_to_json(self.stats))
        self.info.update(
            total_episodes=len(self.episodes), total_frames=start + length, total_tasks=len(self.tasks),
            splits={"train": f"0:{len(self.episodes)}"},
            features={**self.features, **{k: v for k, v in self.info["features"].items() if k in fmt.INDEX_FEATURES}},
        )  # fmt: skip
        fmt.write_json(self.root / fmt.INFO, self.info)
        return index

    def _checked(self, episode: EpisodeRecord) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(states, actions, images by camera) of an episode this dataset can take, or one line saying why not."""
        states = np.asarray(episode.states, np.float32)
        actions = np.asarray(episode.actions, np.float32)
        length = len(actions)
        p, d = (len(self.features[k]["names"]) for k in (fmt.STATE, fmt.ACTION))
        if length == 0 or states.shape != (length, p) or actions.shape != (length, d):
            raise UserError(
                f"dataset {self.root}: an episode needs T >= 1 states (T, {p}) and actions (T, {d}); got "
                f"{states.shape} and {actions.shape}"
            )
        if sorted(episode.images) != sorted(self.cameras):
            raise UserError(
                f"dataset {self.root}: the episode's cameras {sorted(episode.images)} are not {self.cameras}"
            )
        images = {cam: np.asarray(episode.images[cam]) for cam in self.cameras}
        for cam, frames in images.items():
            known = self.features.get(fmt.IMAGE_PREFIX + cam, {}).get("shape")
            shape = (length, *(known[:2] if known else frames.shape[1:3]), 3)
            if frames.shape != shape or frames.dtype != np.uint8 or shape[1] % 2 or shape[2] % 2:
                raise UserError(
                    f"dataset {self.root}: camera {cam} gave {frames.dtype} images {frames.shape}; this episode "
                    f"needs uint8 {shape} (RGB, even sizes for H.264{', as earlier episodes' if known else ''})"
                )
        return states, actions, images

    def _add_rows(self, table) -> dict:
        import pyarrow as pa

        path = self._data_path()
        if self.data_rows and path.stat().st_size / 2**20 >= self.info["data_files_size_in_mb"]:
            self.data_file, self.data_rows = fmt.next_file(*self.data_file), []
            path = self._data_path()
        self.data_rows.append(table)
        fmt.write_parquet(path, pa.concat_tables(self.data_rows))
        return {"data/chunk_index": self.data_file[0], "data/file_index": self.data_file[1]}

    def _data_path(self) -> Path:
        return self.root / fmt.DATA_PATH.format(chunk_index=self.data_file[0], file_index=self.data_file[1])

    def _add_video(self, cam: str, frames: np.ndarray) -> dict:
        key = fmt.IMAGE_PREFIX + cam
        if key not in self.features:
            self.features[key] = fmt.video_feature(*frames.shape[1:3], self.fps, "h264", video.PIX_FMT)
        target = self._video_path(cam)
        if self.video_frames[cam] and target.stat().st_size / 2**20 >= self.info["video_files_size_in_mb"]:
            self.video_file[cam], self.video_frames[cam] = fmt.next_file(*self.video_file[cam]), 0
            target = self._video_path(cam)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            segment = Path(tmp) / "episode.mp4"
            video.encode(frames, segment, self.fps, self.crf)
            video.append(segment, target, self.fps)
        start = self.video_frames[cam] / self.fps
        self.video_frames[cam] += len(frames)
        prefix = f"videos/{key}"
        return {
            f"{prefix}/chunk_index": self.video_file[cam][0], f"{prefix}/file_index": self.video_file[cam][1],
            f"{prefix}/from_timestamp": start, f"{prefix}/to_timestamp": start + len(frames) / self.fps,
        }  # fmt: skip

    def _video_path(self, cam: str) -> Path:
        chunk, file = self.video_file[cam]
        key = fmt.IMAGE_PREFIX + cam
        return self.root / fmt.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)

    def close(self) -> None:
        """Ends the recording. Every file is complete after each episode already, so nothing is flushed here."""
        self.closed = True
