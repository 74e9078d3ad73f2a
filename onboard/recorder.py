"""Episode recording while the controller runs (format: onboard/episode_schema.py).

The listeners run on the event-loop thread and only turn each tick / chunk / operator command into a plain
row; a writer thread batches rows into parquet row groups, so the fast loop never waits on the disk.
An episode begins at operator `start` (or at ready when the service starts running) and ends at `stop`,
`estop`, shutdown, or `recording.max_episode_s` (then recording pauses until the next start: a cut
episode would not replay exactly). After each episode the oldest episodes are deleted while the dataset
is above `recording.max_total_mb`.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from anchorvla.errors import UserError
from onboard.config import Config
from onboard.episode_schema import EVENT_SCHEMA, FORMAT_VERSION, FRAME_SCHEMA
from onboard.journal import event
from onboard.runtime import Runtime
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel

log = logging.getLogger("anchorvla.recorder")
CHUNKS_REMEMBERED = 64  # the schedule serves actions of the newest one or two chunks
EVENTS_PER_GROUP = 20  # chunk events (with images) per parquet row group: bounds the writer's memory


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


def _list(a) -> list | None:
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


def _encode_frames(frames: dict) -> list[dict]:
    return [
        {
            "camera": n,
            "height": f.image.shape[0],
            "width": f.image.shape[1],
            "t_ns": f.t_ns,
            "rgb": np.ascontiguousarray(f.image).tobytes(),
        }
        for n, f in frames.items()
    ]


def _encode_images(row: dict) -> dict:
    """Camera frames of a chunk event (and its anchor frames) -> the schema's image structs (raw RGB bytes)."""
    encoded = {key: _encode_frames(row[key]) for key in ("images", "anchor_images") if row.get(key)}
    return {**row, **encoded}


def episode_paths(root: Path, index: int) -> tuple[Path, Path]:
    name = f"episode_{index:06d}.parquet"
    return root / "data" / name, root / "events" / name


def _next_index(root: Path) -> int:
    existing = [int(p.stem.split("_")[1]) for p in (root / "data").glob("episode_*.parquet")]
    return max(existing, default=-1) + 1


class _Writer(threading.Thread):
    """Owns the parquet files of the open episode; fed through a queue."""

    def __init__(self, root: Path, flush_every: int, max_total_bytes: int):
        super().__init__(name="episode-writer", daemon=True)
        self.root, self.flush_every, self.max_total_bytes = root, flush_every, max_total_bytes
        self.queue: queue.Queue = queue.Queue()
        self.errors: list[str] = []

    def run(self) -> None:
        frames: list[dict] = []
        events: list[dict] = []
        writers: dict[str, pq.ParquetWriter] = {}
        episode: dict | None = None
        while True:
            item = self.queue.get()
            kind = item[0]
            try:
                if kind == "begin":
                    episode = item[1]
                    frames, events, writers = [], [], {}
                elif kind == "frame":
                    frames.append(item[1])
                    if len(frames) >= self.flush_every:
                        self._flush(writers, "data", episode, frames, FRAME_SCHEMA)
                        frames = []
                elif kind == "event":
                    events.append(_encode_images(item[1]))
                    if len(events) >= EVENTS_PER_GROUP:
                        self._flush(writers, "events", episode, events, EVENT_SCHEMA)
                        events = []
                elif kind in ("end", "quit"):
                    if episode is not None:
                        self._flush(writers, "data", episode, frames, FRAME_SCHEMA)
                        self._flush(writers, "events", episode, events, EVENT_SCHEMA)
                        for w in writers.values():
                            w.close()
                        self._finish(episode, item[1])
                    episode, frames, events, writers = None, [], [], {}
                    if kind == "quit":
                        return
            except Exception as exc:  # recording must never take the controller down
                self.errors.append(str(exc))
                event(log, logging.ERROR, "episode writing failed", error=exc)

    def _flush(self, writers: dict, table: str, episode: dict, rows: list[dict], schema: pa.Schema) -> None:
        if table not in writers:
            data, events = episode_paths(self.root, episode["episode_index"])
            path = data if table == "data" else events
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[table] = pq.ParquetWriter(
                path, schema.with_metadata(episode["metadata"]), compression="zstd"
            )
        if rows:
            writers[table].write_table(pa.Table.from_pylist(rows, schema=schema))

    def _finish(self, episode: dict, summary: dict) -> None:
        index = episode["episode_index"]
        sizes = [p.stat().st_size for p in episode_paths(self.root, index) if p.exists()]
        line = {"episode_index": index, "tasks": [episode["task"]], **summary, "bytes": sum(sizes)}
        meta = self.root / "meta" / "episodes.jsonl"
        meta.parent.mkdir(parents=True, exist_ok=True)
        with meta.open("a") as f:
            f.write(json.dumps(line) + "\n")
        event(
            log,
            logging.INFO,
            "episode recorded",
            episode=index,
            frames=summary["length"],
            bytes=sum(sizes),
            reason=summary["end_reason"],
        )
        self._rotate(keep=index)

    def _rotate(self, keep: int) -> None:
        """Delete the oldest episodes while the dataset is over its size cap (never the one just written)."""
        files = sorted((self.root / "data").glob("episode_*.parquet"))
        total = sum(
            p.stat().st_size for d in ("data", "events") for p in (self.root / d).glob("episode_*.parquet")
        )
        for data in files:
            index = int(data.stem.split("_")[1])
            if total <= self.max_total_bytes or index == keep:
                break
            for path in episode_paths(self.root, index):
                if path.exists():
                    total -= path.stat().st_size
                    path.unlink()
            event(log, logging.WARNING, "episode deleted: dataset over recording.max_total_mb", episode=index)


class EpisodeRecorder:
    def __init__(self, config: Config, runtime: Runtime, tap: ResidualTap):
        self.config = config
        self.runtime = runtime
        self.tap = tap
        rec = config.recording
        self.root = rec.root
        self.max_frames = math.ceil(rec.max_episode_s * config.control.rate_hz)
        self.images = rec.images
        try:
            for sub in ("data", "events", "meta"):
                (rec.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"recording.root {rec.root}: {exc.strerror} (the unit's StateDirectory= provides "
                "/var/lib/anchorvla; elsewhere set recording.root to a writable directory)"
            ) from None
        self.writer = _Writer(rec.root, rec.flush_every, int(rec.max_total_mb * 1e6))
        self.writer.start()
        self.episode_index: int | None = None
        self._next_index = _next_index(rec.root)
        self._frames = 0
        self._seq = 0
        self._t0_ns = 0
        self._task = ""
        # id(chunk) -> index in the episode, for the chunks the schedule may still serve. No references are
        # kept (a chunk's context can be large); an id reused by a newer chunk is overwritten at its push.
        self._chunk_index: OrderedDict[int, int] = OrderedDict()
        self._chunk_count = 0
        self._anchor_stamps: dict[str, int] = {}  # t_ns of the anchor frames stored last in this episode
        self._previous_arm: np.ndarray | None = None
        runtime.fast.tick_listeners.append(self.on_tick)
        runtime.slow.chunk_listeners.append(self.on_chunk)

    @property
    def recording(self) -> bool:
        return self.episode_index is not None

    def _metadata(self) -> dict[str, str]:
        fast = self.runtime.fast
        joints = list(fast.arm.joint_names)
        return {
            "anchorvla.format": FORMAT_VERSION,
            "anchorvla.config": self.config.model_dump_json(),
            "anchorvla.channels": json.dumps(list(self.runtime.engine.channels)),
            "anchorvla.joint_names": json.dumps(joints),
            "anchorvla.state_names": json.dumps([arm_channel(j) for j in joints] + list(BASE_CHANNELS)),
            "anchorvla.fps": str(self.config.control.rate_hz),
        }

    def begin(self, task: str) -> None:
        if self.recording:
            self.end("new episode")
        self.episode_index = self._next_index
        self._next_index += 1
        self._frames = self._seq = 0
        self._task = task
        self._chunk_index.clear()
        self._chunk_count = 0
        self._anchor_stamps = {}
        last = self.runtime.fast.last_command
        self._previous_arm = None if last is None else last.arm_positions
        self.writer.queue.put(
            ("begin", {"episode_index": self.episode_index, "task": task, "metadata": self._metadata()})
        )
        event(log, logging.INFO, "episode started", episode=self.episode_index, task=task)

    def end(self, reason: str) -> None:
        if not self.recording:
            return
        self.writer.queue.put(
            ("end", {"length": self._frames, "chunks": self._chunk_count, "end_reason": reason})
        )
        self.episode_index = None
        self._chunk_index.clear()
        self._chunk_count = 0

    def close(self) -> None:
        self.end("shutdown")
        self.writer.queue.put(("quit", None))
        self.writer.join(timeout=30)

    def _event(self, kind: str, detail: str = "", **fields) -> None:
        row = {
            "episode_index": self.episode_index,
            "seq": self._seq,
            "before_frame": self._frames,
            "kind": kind,
            "detail": detail,
            **fields,
        }
        self._seq += 1
        self.writer.queue.put(("event", row))

    def on_operator(self, command: str, args: dict) -> None:
        if command == "start":
            self.begin(args.get("instruction", ""))
        elif self.recording:
            self._event(command, args.get("reason", ""))
            if command in ("stop", "estop"):
                self.end(command)

    def on_chunk(self, obs: Observation, chunk: ActionChunk) -> None:
        if not self.recording:
            return
        index = self._chunk_count
        self._chunk_count += 1
        self._chunk_index[id(chunk)] = index
        self._chunk_index.move_to_end(id(chunk))
        while len(self._chunk_index) > CHUNKS_REMEMBERED:
            self._chunk_index.popitem(last=False)
        images = dict(obs.frames) if self.images else None  # encoded on the writer thread
        anchors = None
        stamps = {n: f.t_ns for n, f in obs.anchor_frames.items()}
        if self.images and stamps and stamps != self._anchor_stamps:
            anchors, self._anchor_stamps = dict(obs.anchor_frames), stamps
        self._event(
            "chunk",
            chunk_index=index,
            push_next_tick_ns=self.runtime.fast.next_deadline_ns,
            t_obs_ns=chunk.t_obs_ns,
            dt_ns=chunk.dt_ns,
            actions=np.asarray(chunk.actions, dtype=np.float64).ravel().tolist(),
            horizon=len(chunk),
            anchor_index=chunk.anchor_index,
            scores=_list(chunk.scores),
            inference_ms=self.runtime.stats.inference_ms.recent(1)[0]
            if len(self.runtime.stats.inference_ms)
            else None,
            gripper=None
            if chunk.gripper is None
            else {**vars(chunk.gripper), "logits": _list(chunk.gripper.logits)},
            images=images,
            anchor_images=anchors,
        )

    def on_tick(self, tick_ns: int) -> None:
        residual = self.tap.take()
        if not self.recording:
            return
        d = self.runtime.fast.last_decision
        snap = self.runtime.fast.latest
        if self._frames == 0:
            self._t0_ns = tick_ns
        arm, base, planned, cmd = snap.arm, snap.base, d.planned, d.command
        chunk_index = self._chunk_index.get(id(planned.chunk)) if planned is not None else None
        base_v = cmd.base.as_array()
        state_base = base.velocity[:2].tolist() + [base.yaw_speed] if base is not None else [0.0, 0.0, 0.0]
        stats = self.runtime.stats
        row = {
            "episode_index": self.episode_index,
            "frame_index": self._frames,
            "timestamp": (tick_ns - self._t0_ns) / 1e9,
            "task": self._task,
            "observation.state": (
                arm.positions.tolist() if arm is not None else [float("nan")] * len(cmd.arm_positions)
            )
            + state_base,
            "action": self._action_vector(cmd),
            "tick_ns": tick_ns,
            "arm.positions": _list(arm.positions) if arm else None,
            "arm.velocities": _list(arm.velocities) if arm else None,
            "base.position": _list(base.position) if base else None,
            "base.yaw": base.yaw if base else None,
            "base.velocity": _list(base.velocity) if base else None,
            "base.yaw_speed": base.yaw_speed if base else None,
            "base.mode": base.mode if base else None,
            "base.error_code": base.error_code if base else None,
            "plan.chunk_index": chunk_index,
            "plan.j": planned.j if planned is not None else None,
            "plan.action": _list(planned.action) if planned is not None else None,
            "residual": _list(residual),
            "desired.arm": _list(d.desired.arm_positions),
            "desired.base": _list(d.desired.base.as_array()),
            "desired.hold": d.desired.hold,
            "command.arm": _list(cmd.arm_positions),
            "command.base": _list(base_v),
            "command.hold": cmd.hold,
            "previous_command.arm": _list(self._previous_arm),
            "safety.faults": list(d.faults),
            "paused": d.paused,
            "timing.lateness_ms": stats.lateness_ms.recent(1)[0],
            "timing.compute_ms": stats.tick_compute_ms.recent(1)[0],
        }
        self._previous_arm = cmd.arm_positions
        self._frames += 1
        self.writer.queue.put(("frame", row))
        if self._frames >= self.max_frames:
            event(
                log,
                logging.WARNING,
                "episode reached recording.max_episode_s: recording stops until the next start",
                episode=self.episode_index,
            )
            self.end("max_episode_s")

    def _action_vector(self, cmd) -> list[float]:
        """The sent command in the policy's channel order (what a policy trained on this data outputs)."""
        values = {arm_channel(j): p for j, p in zip(cmd.joint_names, cmd.arm_positions, strict=True)}
        values.update(zip(BASE_CHANNELS, cmd.base.as_array(), strict=True))
        return [float(values.get(c, 0.0)) for c in self.runtime.engine.channels]


def read_episode(path: Path) -> tuple[dict[str, str], list[dict], list[dict]]:
    """An episode's metadata, frame rows and event rows (given its data/ or events/ parquet path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    root = path.parent.parent
    data, events = episode_paths(root, int(path.stem.split("_")[1]))
    table = pq.read_table(data)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    event_rows = pq.read_table(events).to_pylist() if events.exists() else []
    return meta, table.to_pylist(), sorted(event_rows, key=lambda r: r["seq"])
