"""The recorded episodes as a LeRobotDataset v3 for training (policy_runtime/dataset_writer.py), under
`<recording.root>/dataset/`: each episode the service records is added when its parts are joined (at its end,
or at the next start after a kill, with its rows up to the kill). The recorder's joiner thread hands it to a
worker process (`DatasetWorker`, running `python -m onboard.episode_dataset ROOT`, niced): decoding and encoding
an episode's video holds the interpreter lock for milliseconds at a time, which in the controller's process
would delay the fast loop's ticks, and its memory is the worker's, not the controller's.

From the episode's joined data file (onboard/episode_schema.py): `observation.state` (named by the file's
`anchorvla.state_names`), `action` (by `anchorvla.channels`), the task and the rate; from its video parts (one
MP4 per camera per part file, written by the recorder's writer when `recording.images` is on), every camera's
frame of each tick. A tick whose arm did not answer has no measured state: it takes the nearest measured one
before it (after it, at the episode's start); an episode in which the arm never answered is not added.

The video parts folder is the mark of an episode still to be added: it is removed once the episode is in the
dataset. Before adding, the episode's dataset index is written in that folder, so an add that a kill cut short
after the dataset took the episode (its meta/episodes row is the commit point) is not repeated.
The dataset is not counted in `recording.max_total_mb` (that caps the replay log; a LeRobot dataset is appended
to, not pruned): copy it off the robot and start a new one by moving it away.
The frames are decoded into a memory-mapped file in that folder (one camera's whole episode would not fit in
memory on the robot), which the dataset writer reads and encodes again.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from anchorvla.errors import UserError
from onboard import episode_store as store
from policy_runtime import lerobot_format as fmt
from policy_runtime.dataset import DatasetWriter, EpisodeRecord

DATASET_DIR = "dataset"
_ADDED_AS = "dataset_episode"  # in the video parts folder: the dataset index the episode is being added as


def _decoded_frames(parts: list[Path]):
    import av

    for part in parts:
        with av.open(str(part)) as src:
            for frame in src.decode(src.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")


def _frames_file(path: Path, parts: list[Path], count: int) -> np.ndarray:
    """The first `count` frames of the parts, memory-mapped from `path`; fewer when the parts hold fewer."""
    frames = None
    n = 0
    for image in _decoded_frames(parts):
        if frames is None:
            frames = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, *image.shape))
        if image.shape != frames.shape[1:]:
            raise ValueError(
                f"{path.parent.name}: video parts change size ({image.shape} after {frames.shape[1:]})"
            )
        frames[n] = image
        n += 1
        if n == count:
            break
    if frames is None:
        return np.zeros((0, 1, 1, 3), np.uint8)
    frames.flush()
    return frames[:n]


def _measured_states(states: np.ndarray) -> np.ndarray:
    """Rows with no measured state (NaN: the arm did not answer) take the nearest measured row before them, or
    after them at the start."""
    missing = np.isnan(states).any(axis=1)
    if missing.all():
        raise UserError("the arm never answered during the episode: no state to train on")
    measured = np.flatnonzero(~missing)
    source = np.maximum.accumulate(np.where(missing, -1, np.arange(len(states))))
    return states[np.where(source < 0, measured[0], source)]


class EpisodeDataset:
    """Adds recorded episodes to the dataset; one writer kept open while the episodes' layouts stay the same."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / DATASET_DIR
        self._writer: DatasetWriter | None = None
        self._key: tuple | None = None

    def add(self, index: int) -> int | None:
        """Add recorded episode `index` (joined already); returns its index in the dataset, None when there is
        nothing to add (no rows, or added before). Raises UserError for an episode the dataset cannot take
        (then its video parts are removed: the replay log keeps it); other errors leave it to the next start."""
        pending = store.video_parts_dir(self.root, index)
        if not pending.is_dir():
            return None
        try:
            added = self._add(index, pending)
        except UserError:
            shutil.rmtree(pending, ignore_errors=True)
            raise
        except Exception:
            self._writer = None  # its view of the files may be off: read them again next time
            raise
        shutil.rmtree(pending)
        return added

    def _add(self, index: int, pending: Path) -> int | None:
        data, _ = store.episode_paths(self.root, index)
        if not data.is_file():  # no rows (removed when joined), or deleted by the size cap
            return None
        marker = pending / _ADDED_AS
        if marker.is_file() and self._episodes_in_dataset() > int(marker.read_text()):
            return int(marker.read_text())
        table = pq.read_table(data, columns=["observation.state", "action", "task"])
        if table.num_rows == 0:
            return None
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        videos = store.video_part_files(self.root, index)
        length = table.num_rows
        images = {}
        for camera, parts in videos.items():
            images[camera] = _frames_file(pending / f".{camera}.frames.npy", parts, length)
            length = min(length, len(images[camera]))  # a kill between a video part and its rows
        images = {camera: frames[:length] for camera, frames in images.items()}
        if length == 0:
            return None
        states = _measured_states(
            np.array(table.column("observation.state").to_pylist()[:length], np.float32)
        )
        actions = np.array(table.column("action").to_pylist()[:length], np.float32)
        writer = self._writer_for(
            float(meta["anchorvla.fps"]),
            tuple(json.loads(meta["anchorvla.channels"])),
            tuple(json.loads(meta["anchorvla.state_names"])),
            tuple(sorted(images)),
        )
        dataset_index = len(writer.episodes)
        with marker.open("w") as f:
            f.write(str(dataset_index))
            f.flush()
            os.fsync(f.fileno())
        task = table.column("task")[0].as_py()
        writer.add_episode(EpisodeRecord(states, actions, task, images))
        return dataset_index

    def _writer_for(self, fps: float, channels: tuple, state_names: tuple, cameras: tuple) -> DatasetWriter:
        key = (fps, channels, state_names, cameras)
        if self._writer is None or self._key != key:
            self._writer, self._key = None, None
            self._writer = DatasetWriter(self.path, fps, list(channels), list(state_names), list(cameras))
            self._key = key
        return self._writer

    def _episodes_in_dataset(self) -> int:
        path = self.path / fmt.EPISODES.format(chunk_index=0, file_index=0)
        return pq.read_metadata(path).num_rows if path.is_file() else 0


class DatasetWorker:
    """The controller's side of the worker process: `add(index)` sends it an episode and waits for its reply
    (a dict: "added": dataset index or None, or "refused"/"failed": why), giving up when `abort` is set (the
    worker is killed then; what it left half-done is redone at the next start). Started again after it died."""

    def __init__(self, root: Path, abort):
        self.root, self.abort = Path(root), abort
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "onboard.episode_dataset", str(self.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C at the terminal is the controller's to handle, not the worker's
        )

    def add(self, index: int) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not selector.select(timeout=0.1):
                if self.abort.is_set():
                    self.close(kill=True)
                    raise store.Aborted(f"episode {index}")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the dataset worker exited ({code}) while adding the episode")
        return json.loads(line)

    def close(self, kill: bool = False, timeout_s: float = 1.0) -> None:
        """End the worker: at once (`kill`), or by closing its input, killed if not gone within `timeout_s`."""
        process, self.process = self.process, None
        if process is None:
            return
        if not kill:
            process.stdin.close()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                kill = True
        if kill:
            process.kill()
            process.wait()
        process.stdout.close()


def serve(root: Path, requests, replies) -> None:
    """The worker process: one episode index per line in, one JSON reply per line out, until its input ends.
    It holds a lock on the dataset throughout: a worker whose controller was killed (its input then ends) may
    still be finishing an episode when the next start's worker begins, and two writers would corrupt it."""
    os.nice(10)
    lock = os.open(root / ".dataset.lock", os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(lock, fcntl.LOCK_EX)
    dataset = EpisodeDataset(root)
    for line in requests:
        index = int(line)
        try:
            reply = {"added": dataset.add(index)}
        except UserError as exc:
            reply = {"refused": str(exc)}
        except Exception as exc:
            reply = {"failed": store.failure_reason(exc, dataset.path)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    replies = os.fdopen(os.dup(1), "w")  # the replies alone: whatever else writes to stdout goes to stderr
    os.dup2(2, 1)
    serve(Path(sys.argv[1]), sys.stdin, replies)
