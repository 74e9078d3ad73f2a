"""Episode recording while the controller runs (format and on-disk layout: onboard/episode_schema.py).

The listeners run on the event-loop thread and only enqueue references to what a tick or a chunk produced
(onboard/episode_rows.py); a writer thread makes the rows and writes them as part files of at most PART_S
each (onboard/episode_store.py), so the fast loop never waits on the disk and a killed process loses at most
the last part. An episode begins at operator `start` (or at ready when the service starts running) and ends at
`stop`, `estop`, shutdown, or `recording.max_episode_s` (then recording pauses until the next start: a cut
episode would not replay exactly). A joiner thread then joins its parts into one file, indexes it and deletes
the oldest episodes while the replay log is above `recording.max_total_mb`, and has the dataset worker process
add the episode to the LeRobot dataset for training (onboard/episode_dataset.py: its video is decoded and encoded
again, seconds per minute of episode, outside this process); it first joins and adds the episodes an earlier
process left. Joining and adding never hold up the writer. With `recording.images` the tick listener also
enqueues the frames the tick saw (references); the writer encodes them as each part's video, before the part's
rows (a tick without a camera's frame repeats the one before).

Failures stop the recording, never the controller: a write that fails (a full disk: ENOSPC) ends the episode
with what is on disk, one warning, and `status()` (shown by `anchorvla ctl status`) says "stopped" and why
until the next `start` tries again. The queue to the writer is bounded at QUEUE_S of ticks: a writer that
falls that far behind (a disk too slow) stops the recording the same way (stop-recording, not drop-oldest:
an episode with holes would not replay), and `frames_not_recorded` counts the ticks lost since the stop.
At shutdown the writer and the joiner get CLOSE_S to finish; an episode not joined by then stays as parts, and
one not added to the dataset by then (the worker is ended) is added at the next start.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from anchorvla.errors import UserError
from onboard import episode_store as store
from onboard.config import Config
from onboard.episode_dataset import DatasetWorker
from onboard.episode_rows import ChunkRecord, EpisodeRows, OperatorRecord, TickRecord
from onboard.episode_schema import EVENT_SCHEMA, FORMAT_VERSION, FRAME_SCHEMA, PART_S
from onboard.episode_store import episode_paths, failure_reason, read_episode  # noqa: F401 (read_episode: imported from here too)
from onboard.journal import event
from onboard.runtime import Runtime
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel

log = logging.getLogger("anchorvla.recorder")
EVENTS_PER_GROUP = 20  # chunk events (with images) per row group of a finished file
QUEUE_S = 20.0  # how far (in ticks of data) the writer may fall behind before the recording stops
CLOSE_S = (
    2.0  # at shutdown, the writer's and joiner's time to finish before they are told to stop where they are
)
ABORT_S = 1.0  # then, their time to reach a stopping point (between two items or two parts)
_QUIT = object()


class ResidualTap:
    """Wraps the engine so the recorder sees the residual correction each tick used (all else forwarded)."""

    def __init__(self, engine):
        self._engine = engine
        self.last_residual: np.ndarray | None = None

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def residual(self, obs, chunk, j, planned):
        correction = self._engine.residual(obs, chunk, j, planned)
        self.last_residual = None if correction is None else np.array(correction, dtype=np.float64)
        return correction

    def take(self) -> np.ndarray | None:
        value, self.last_residual = self.last_residual, None
        return value


@dataclass(frozen=True)
class _Begin:
    index: int
    task: str
    previous_arm: np.ndarray | None  # the command before the episode's first tick


@dataclass(frozen=True)
class _End:
    reason: str


class _Episode:
    """The episode the writer has open: its rows and what is not in a part yet."""

    def __init__(self, rows: EpisodeRows, cameras: dict[str, tuple[int, int, int]]):
        self.rows = rows
        self.frames: list[dict] = []
        self.events: list[dict] = []
        self.images: dict[str, list] = {name: [] for name in cameras}  # per tick: the camera's Frame or None
        # the image a tick without a frame of that camera repeats (black before the first)
        self.last_image = {name: np.zeros(shape, np.uint8) for name, shape in cameras.items()}
        self.parts = 0


class _Joiner(threading.Thread):
    """Joins each ended episode's parts into its files, indexes it (meta/episodes.jsonl) and applies the size cap;
    before that, joins the episodes an earlier process left unfinished. A failure leaves the parts (readable,
    joined at the next start) and is logged once per episode."""

    def __init__(
        self,
        root,
        group_rows: dict[str, int],
        max_total_bytes: int,
        unfinished: list[int],
        not_in_dataset: list[int],
        abort,
    ):
        super().__init__(name="episode-joiner", daemon=True)
        self.root, self.group_rows, self.max_total_bytes = root, group_rows, max_total_bytes
        self.unfinished, self.not_in_dataset, self.abort = unfinished, not_in_dataset, abort
        self.dataset = DatasetWorker(root, abort)
        self.jobs: queue.Queue = queue.Queue()  # (episode index, task, summary) or _QUIT

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.dataset.close()

    def _run(self) -> None:
        try:  # now: its start-up (a Python with numpy, Arrow, FFmpeg) is over by the first episode
            self.dataset.start()
        except OSError as exc:  # each episode tries again, and says so
            event(log, logging.WARNING, "dataset worker not started", reason=str(exc))
        for index in self.unfinished:
            try:
                line = store.recover(self.root, index, self.group_rows, self.abort)
            except store.Aborted:
                return
            except Exception as exc:
                self._not_joined(index, exc)
                continue
            if line is not None:
                event(log, logging.INFO, "unfinished episode joined", episode=index, frames=line["length"])
        for index in self.not_in_dataset:
            if self.abort.is_set():
                return
            self._to_dataset(index)
        while not self.abort.is_set():
            job = self.jobs.get()
            if job is _QUIT:
                return
            self._join(*job)

    def _not_joined(self, index: int, exc: Exception) -> None:
        event(
            log,
            logging.WARNING,
            "episode left as parts: joined at the next start",
            episode=index,
            reason="shutdown" if isinstance(exc, store.Aborted) else failure_reason(exc, self.root),
        )

    def _to_dataset(self, index: int) -> None:
        """Add the joined episode to the LeRobot dataset (by the worker process); a failure is one warning (the
        replay log keeps the episode)."""
        try:
            reply = self.dataset.add(index)
        except store.Aborted:
            event(
                log,
                logging.WARNING,
                "episode not added to the dataset yet: added at the next start",
                episode=index,
            )
            return
        except Exception as exc:
            reply = {"failed": failure_reason(exc, self.root)}
        if "refused" in reply:
            event(
                log,
                logging.WARNING,
                "episode not added to the dataset",
                episode=index,
                reason=reply["refused"],
            )
        elif "failed" in reply:
            event(
                log,
                logging.WARNING,
                "episode not added to the dataset: tried again at the next start",
                episode=index,
                reason=reply["failed"],
            )
        elif reply["added"] is not None:
            event(
                log,
                logging.INFO,
                "episode added to the dataset",
                episode=index,
                dataset_episode=reply["added"],
            )

    def _join(self, index: int, task: str, summary: dict) -> None:
        try:
            for final, table in zip(episode_paths(self.root, index), store.TABLES, strict=True):
                store.join_parts(final, self.group_rows[table], self.abort)
            line = store.finish(self.root, index, task, summary)
            event(
                log,
                logging.INFO,
                "episode recorded",
                episode=index,
                frames=line["length"],
                bytes=line["bytes"],
                reason=summary["end_reason"],
            )
            self._to_dataset(index)
            for deleted in store.rotate(self.root, self.max_total_bytes, keep=index):
                event(
                    log,
                    logging.WARNING,
                    "episode deleted: dataset over recording.max_total_mb",
                    episode=deleted,
                )
        except Exception as exc:  # Aborted included
            self._not_joined(index, exc)


class _Writer(threading.Thread):
    """Owns the part files of the open episode; fed through a queue (bounded by the recorder, not here, so the
    control items beginning and ending episodes always get through); hands ended episodes to the joiner."""

    def __init__(
        self,
        root,
        metadata: dict[str, str],
        channels: tuple[str, ...],
        cameras: dict[str, tuple[int, int, int]],
        fps: int,
        frames_per_part: int,
        joiner: _Joiner,
    ):
        super().__init__(name="episode-writer", daemon=True)
        self.root, self.channels, self.cameras, self.fps = root, channels, cameras, fps
        self.images = bool(cameras)
        self.frames_per_part, self.joiner, self.abort = frames_per_part, joiner, joiner.abort
        self.frame_schema = FRAME_SCHEMA.with_metadata(metadata)
        self.event_schema = EVENT_SCHEMA.with_metadata(metadata)
        self.queue: queue.Queue = queue.Queue()
        # (episode, reason) of the latest episode whose writing failed; read by the recorder's thread
        self.failure: tuple[int, str] | None = None
        self.lost = 0  # frames of that episode that reached the writer but not the disk
        self._open: _Episode | None = None

    def run(self) -> None:
        while not self.abort.is_set():
            item = self.queue.get()
            if item is _QUIT:
                return
            self._handle(item)
        if self._open is not None:  # stopped at the deadline: keep what is buffered as a last part
            try:
                self._write_part(self._open)
            except Exception as exc:
                event(
                    log,
                    logging.WARNING,
                    "episode's last part not written",
                    error=failure_reason(exc, self.root),
                )

    def _handle(self, item) -> None:
        if isinstance(item, _Begin):
            rows = EpisodeRows(item.index, item.task, self.channels, item.previous_arm, self.images)
            self._open, self.lost = _Episode(rows, self.cameras), 0
            try:
                store.begin_video_parts(self.root, item.index)
            except Exception as exc:
                self._failed(self._open, exc)
            return
        episode = self._open
        if episode is None:  # the rest of an episode whose writing failed
            self.lost += isinstance(item, TickRecord)
            return
        try:
            if isinstance(item, TickRecord):
                episode.frames.append(episode.rows.frame(item))
                for name, images in episode.images.items():
                    images.append(item.frames.get(name))
                if len(episode.frames) >= self.frames_per_part:
                    self._write_part(episode)
            elif isinstance(item, ChunkRecord):
                episode.events.append(episode.rows.chunk(item))
            elif isinstance(item, OperatorRecord):
                episode.events.append(episode.rows.operator(item))
            elif isinstance(item, _End):
                self._write_part(episode, last=True)
                self._open = None
                rows = episode.rows
                summary = {"length": rows.frames, "chunks": rows.chunks, "end_reason": item.reason}
                self.joiner.jobs.put((rows.index, rows.task, summary))
        except Exception as exc:  # recording must never take the controller down
            self._failed(episode, exc)

    def _failed(self, episode: _Episode, exc: Exception) -> None:
        self._open = None
        self.lost += len(episode.frames)
        self.failure = (episode.rows.index, failure_reason(exc, self.root))
        event(log, logging.WARNING, "recording stopped", episode=episode.rows.index, reason=self.failure[1])

    def _video(self, episode: _Episode, name: str) -> np.ndarray:
        """The part's frames of camera `name`, one per tick: a tick without a frame (or with one of another
        size than configured) repeats the camera's image before it."""
        images, last = [], episode.last_image[name]
        for frame in episode.images[name]:
            if frame is not None and frame.image.shape == last.shape:
                last = frame.image
            images.append(last)
        episode.last_image[name] = last
        return np.stack(images)

    def _write_part(self, episode: _Episode, last: bool = False) -> None:
        data, events = episode_paths(self.root, episode.rows.index)
        if episode.frames:  # the video first: a part's rows on disk always have their frames
            for name in self.cameras:
                frames = self._video(episode, name)
                store.write_video_part(self.root, episode.rows.index, episode.parts, name, frames, self.fps)
                episode.images[name] = []
        if episode.frames or (last and episode.parts == 0):  # an empty episode still gets its (empty) file
            store.write_part(
                data, episode.parts, pa.Table.from_pylist(episode.frames, schema=self.frame_schema)
            )
            episode.frames = []
        if episode.events:
            store.write_part(
                events, episode.parts, pa.Table.from_pylist(episode.events, schema=self.event_schema)
            )
            episode.events = []
        episode.parts += 1


class EpisodeRecorder:
    def __init__(self, config: Config, runtime: Runtime, tap: ResidualTap):
        self.config = config
        self.runtime = runtime
        self.tap = tap
        rec = config.recording
        self.root = rec.root
        rate = config.control.rate_hz
        self.max_frames = math.ceil(rec.max_episode_s * rate)
        self.queue_limit = 2 * math.ceil(QUEUE_S * rate)  # a tick's frame plus room for chunk/operator events
        try:
            for sub in ("data", "events", "meta"):
                (rec.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"recording.root {rec.root}: {exc.strerror} (the unit's StateDirectory= provides "
                "/var/lib/anchorvla; elsewhere set recording.root to a writable directory)"
            ) from None
        store.remove_temporaries(rec.root)
        cameras = {c.name: (c.height, c.width, 3) for c in config.robot.cameras} if rec.images else {}
        odd = [f"{n} {w}x{h}" for n, (h, w, _) in cameras.items() if h % 2 or w % 2]
        if odd:
            raise UserError(
                f"recording.images: camera {', '.join(odd)}: the episode video (H.264) needs even widths and "
                "heights (set the camera's width/height, or recording.images: false)"
            )
        self.images = bool(cameras)
        if self.images:  # now, before the run: imported by the writer's first part, it held the GIL for ticks
            import av  # noqa: F401
        self.joiner = _Joiner(
            rec.root,
            {"data": rec.flush_every, "events": EVENTS_PER_GROUP},
            int(rec.max_total_mb * 1e6),
            # both listed before the writer adds a folder of parts
            unfinished=store.unfinished(rec.root),
            not_in_dataset=store.not_in_dataset(rec.root),
            abort=threading.Event(),  # set at shutdown once CLOSE_S has passed
        )
        self.writer = _Writer(
            rec.root,
            self._metadata(),
            tuple(runtime.engine.channels),
            cameras,
            round(rate),
            frames_per_part=max(1, math.floor(PART_S * rate)),
            joiner=self.joiner,
        )
        self.joiner.start()
        self.writer.start()
        self.episode_index: int | None = None
        self._next_index = store.next_index(rec.root)
        self._frames = 0
        self._stopped: str | None = None  # why the recording stopped (until the next start)
        self._unrecorded = 0  # ticks since it stopped
        runtime.fast.tick_listeners.append(self.on_tick)
        runtime.slow.chunk_listeners.append(self.on_chunk)

    @property
    def recording(self) -> bool:
        return self.episode_index is not None

    def _metadata(self) -> dict[str, str]:
        joints = list(self.runtime.fast.arm.joint_names)
        return {
            "anchorvla.format": FORMAT_VERSION,
            "anchorvla.config": self.config.model_dump_json(),
            "anchorvla.channels": json.dumps(list(self.runtime.engine.channels)),
            "anchorvla.joint_names": json.dumps(joints),
            "anchorvla.state_names": json.dumps([arm_channel(j) for j in joints] + list(BASE_CHANNELS)),
            "anchorvla.fps": str(self.config.control.rate_hz),
        }

    def status(self) -> dict:
        """For `anchorvla ctl status`: recording (episode, frames), idle, or stopped (why, ticks lost)."""
        self._writer_failed()
        queued = self.writer.queue.qsize()
        if self._stopped is not None:
            return {
                "state": "stopped",
                "reason": self._stopped,
                "frames_not_recorded": self._unrecorded + self.writer.lost,
                "queued": queued,
            }
        if self.recording:
            return {
                "state": "recording",
                "episode": self.episode_index,
                "frames": self._frames,
                "queued": queued,
            }
        return {"state": "idle", "queued": queued}

    def _writer_failed(self) -> bool:
        """Whether the writer failed on the latest episode; then the recording stops (the writer warned once)."""
        failure = self.writer.failure
        if failure is None or failure[0] != self._next_index - 1:  # none, or of an episode before this one
            return False
        if self._stopped is None:
            self.episode_index, self._stopped = None, failure[1]
        return True

    def _stop(self, reason: str) -> None:
        event(log, logging.WARNING, "recording stopped", episode=self.episode_index, reason=reason)
        self.end(reason)
        self._stopped = reason

    def _put(self, item) -> bool:
        if self.writer.queue.qsize() >= self.queue_limit:
            self._stop(f"the writer fell {QUEUE_S:g} s behind (disk too slow?)")
            return False
        self.writer.queue.put_nowait(item)
        return True

    def begin(self, task: str) -> None:
        if self.recording:
            self.end("new episode")
        self.episode_index = self._next_index
        self._next_index += 1
        self._frames = self._unrecorded = 0
        self._stopped = None
        # The command before the first tick (the replay's safety layer starts from it); before the run's first
        # tick, the pose the safety layer was seeded with.
        last = self.runtime.fast.last_command
        previous = self.runtime.safety.previous_goal if last is None else last.arm_positions
        self.writer.queue.put(_Begin(self.episode_index, task, previous))
        event(log, logging.INFO, "episode started", episode=self.episode_index, task=task)

    def end(self, reason: str) -> None:
        if not self.recording:
            return
        self.writer.queue.put(_End(reason))
        self.episode_index = None

    def close(self) -> None:
        """End the episode and give the writer and the joiner CLOSE_S to finish; an episode not joined by then
        stays as parts (readable, joined at the next start)."""
        self.end("shutdown")
        deadline = time.monotonic() + CLOSE_S
        self.writer.queue.put(_QUIT)
        self.writer.join(timeout=CLOSE_S)
        self.joiner.jobs.put(_QUIT)  # after the writer's last job, unless the writer is still busy
        self.joiner.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.writer.is_alive() or self.joiner.is_alive():
            self.joiner.abort.set()
            deadline = time.monotonic() + ABORT_S
            for thread in (self.writer, self.joiner):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if self.writer.is_alive():
                event(log, logging.WARNING, "episode writer still busy at exit: its current part is lost")

    def on_operator(self, command: str, args: dict) -> None:
        if command == "start":
            self.begin(args.get("instruction", ""))
        elif self.recording and not self._writer_failed():
            self._put(OperatorRecord(command, args.get("reason", "")))
            if command in ("stop", "estop"):
                self.end(command)

    def on_chunk(self, obs: Observation, chunk: ActionChunk) -> None:
        if not self.recording or self._writer_failed():
            return
        inference = self.runtime.stats.inference_ms
        self._put(
            ChunkRecord(
                obs,
                chunk,
                self.runtime.fast.next_deadline_ns,
                inference.recent(1)[0] if len(inference) else None,
            )
        )

    def on_tick(self, tick_ns: int) -> None:
        residual = self.tap.take()
        if not self.recording or self._writer_failed():
            self._unrecorded += self._stopped is not None
            return
        fast, stats = self.runtime.fast, self.runtime.stats
        record = TickRecord(
            fast.latest,
            fast.last_decision,
            residual,
            stats.lateness_ms.recent(1)[0],
            stats.tick_compute_ms.recent(1)[0],
            fast.latest_frames if self.images else None,
        )
        if not self._put(record):
            self._unrecorded += 1
            return
        self._frames += 1
        if self._frames >= self.max_frames:
            event(
                log,
                logging.WARNING,
                "episode reached recording.max_episode_s: recording stops until the next start",
                episode=self.episode_index,
            )
            self.end("max_episode_s")
