"""Episode files on disk (the layout is described in onboard/episode_schema.py): part files written while an
episode records, joined into one file when it ends or at the next start after a crash, read back in either
form, the dataset's index (meta/episodes.jsonl) and its size cap.

Every file is written under a hidden temporary name, fsynced, then renamed into place (and its folder
fsynced), so a file with the final name is always complete, whenever the process or the power went away.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policy_runtime import video

TABLES = ("data", "events")
PARTS_SUFFIX = ".parts"
_EPISODE_NAME = re.compile(r"episode_(\d+)(\.parquet|\.parts)")


class Aborted(Exception):
    """Joining stopped because the caller's deadline passed; the parts are left as they were."""


def failure_reason(exc: Exception, root) -> str:
    """What `ctl status` and the journal say about a failed write under the recording root."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: {os.strerror(exc.errno)} under {root}"
    if isinstance(exc, OSError):
        return f"write failed under {root}: {exc}"
    return f"recording failed: {type(exc).__name__}: {exc}"


def episode_paths(root: Path, index: int) -> tuple[Path, Path]:
    """The finished files of episode `index`: (data, events)."""
    name = f"episode_{index:06d}.parquet"
    return root / "data" / name, root / "events" / name


def parts_dir(final: Path) -> Path:
    return final.with_suffix(PARTS_SUFFIX)


def part_files(final: Path) -> list[Path]:
    """The complete parts of an episode's table, in order (hidden temporaries are not parts)."""
    return sorted(parts_dir(final).glob("[0-9]*.parquet"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, write: Callable[[Path], None], tmp_suffix: str = "") -> None:
    """`write(temporary)` then fsync and rename to `path`; the temporary is removed if anything fails.
    `tmp_suffix` ends the temporary's name (FFmpeg picks the container from it)."""
    tmp = path.with_name(f".{path.name}.tmp{tmp_suffix}")
    try:
        write(tmp)
        _fsync(tmp)
        tmp.rename(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def write_part(final: Path, number: int, table: pa.Table) -> None:
    """Part `number` of the table whose finished file will be `final`."""
    folder = parts_dir(final)
    if not folder.is_dir():
        folder.mkdir(parents=True)
        _fsync(folder.parent)
    _write_durably(
        folder / f"{number:06d}.parquet", lambda tmp: pq.write_table(table, tmp, compression="zstd")
    )


def video_parts_dir(root: Path, index: int) -> Path:
    """Episode `index`'s per-tick video parts (one folder per camera); while it exists the episode is still to
    be added to the LeRobot dataset, even with no camera in it (onboard/episode_dataset.py)."""
    return root / "video" / f"episode_{index:06d}{PARTS_SUFFIX}"


def begin_video_parts(root: Path, index: int) -> None:
    folder = video_parts_dir(root, index)
    folder.mkdir(parents=True, exist_ok=True)
    _fsync(folder.parent)


def write_video_part(root: Path, index: int, number: int, camera: str, frames: np.ndarray, fps: int) -> None:
    """Part `number` of episode `index`'s video of `camera`: (T, H, W, 3) uint8 frames, one per tick, as MP4."""
    folder = video_parts_dir(root, index) / camera
    if not folder.is_dir():
        folder.mkdir(parents=True)
        _fsync(folder.parent)
    _write_durably(
        folder / f"{number:06d}.mp4", lambda tmp: video.encode(frames, tmp, fps), tmp_suffix=".mp4"
    )


def video_part_files(root: Path, index: int) -> dict[str, list[Path]]:
    """Each camera's complete video parts of episode `index`, in order."""
    folder = video_parts_dir(root, index)
    cameras = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return {cam.name: sorted(cam.glob("[0-9]*.mp4")) for cam in cameras}


def not_in_dataset(root: Path) -> list[int]:
    """Episodes still to be added to the LeRobot dataset (the process ended before it was done)."""
    found = (_EPISODE_NAME.fullmatch(p.name) for p in (root / "video").glob(f"episode_*{PARTS_SUFFIX}"))
    return sorted(int(m[1]) for m in found if m is not None)


def join_parts(final: Path, group_rows: int, abort: threading.Event) -> int:
    """Join the parts of `final` into that one file (row groups of about `group_rows` rows) and remove the
    parts; returns its row count. Raises Aborted, leaving the parts, once `abort` is set."""
    folder = parts_dir(final)
    if final.is_file():  # a crash came between the rename and the removal of the parts
        shutil.rmtree(folder, ignore_errors=True)
        return pq.ParquetFile(final).metadata.num_rows
    parts = part_files(final)
    if not parts:
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        writer: pq.ParquetWriter | None = None
        pending: list[pa.Table] = []
        try:
            for part in parts:
                if abort.is_set():
                    raise Aborted(final.name)
                table = pq.read_table(part)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                pending.append(table)
                if sum(t.num_rows for t in pending) >= group_rows:
                    writer.write_table(pa.concat_tables(pending))
                    pending = []
                rows += table.num_rows
            if pending:
                writer.write_table(pa.concat_tables(pending))
        finally:
            if writer is not None:
                writer.close()

    _write_durably(final, write)
    shutil.rmtree(folder)
    return rows


def read_table(final: Path) -> pa.Table | None:
    """A table of an episode: its finished file, else its parts so far; None when it has neither."""
    if final.is_file():
        return pq.read_table(final)
    parts = part_files(final)
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def read_episode(path: Path) -> tuple[dict[str, str], list[dict], list[dict]]:
    """An episode's metadata, frame rows and event rows. `path` names it by its data/ or events/ file, or the
    parts folder of one that is unfinished (the process died while recording); both forms read the same."""
    path = Path(path)
    match = _EPISODE_NAME.fullmatch(path.name)
    if match is None:
        raise FileNotFoundError(path)
    data, events = episode_paths(path.parent.parent, int(match[1]))
    table = read_table(data)
    if table is None:
        raise FileNotFoundError(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    event_table = read_table(events)
    event_rows = event_table.to_pylist() if event_table is not None else []
    return meta, table.to_pylist(), sorted(event_rows, key=lambda r: r["seq"])


def _indexes(root: Path, suffix: str) -> set[int]:
    found = set()
    for table in TABLES:
        for path in (root / table).glob(f"episode_*{suffix}"):
            match = _EPISODE_NAME.fullmatch(path.name)
            if match is not None:
                found.add(int(match[1]))
    return found


def next_index(root: Path) -> int:
    used = _indexes(root, ".parquet") | _indexes(root, PARTS_SUFFIX) | set(not_in_dataset(root))
    return max(used, default=-1) + 1


def unfinished(root: Path) -> list[int]:
    """Episodes that still have parts: the process ended (or the disk filled) before they were joined."""
    return sorted(_indexes(root, PARTS_SUFFIX))


def remove_temporaries(root: Path) -> None:
    """Hidden files a crash left half-written beside the finished files."""
    for table in TABLES:
        for tmp in (root / table).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def finish(root: Path, index: int, task: str, summary: dict) -> dict:
    """Append the episode's line to meta/episodes.jsonl (fsynced) and return it."""
    sizes = [p.stat().st_size for p in episode_paths(root, index) if p.exists()]
    line = {"episode_index": index, "tasks": [task], **summary, "bytes": sum(sizes)}
    meta = root / "meta" / "episodes.jsonl"
    meta.parent.mkdir(parents=True, exist_ok=True)
    with meta.open("a") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return line


def recover(root: Path, index: int, group_rows: dict[str, int], abort: threading.Event) -> dict | None:
    """Join an unfinished episode and add its line (end_reason "unfinished"); None when it has no frames
    (its files are removed then)."""
    data, events = episode_paths(root, index)
    length = join_parts(data, group_rows["data"], abort)
    join_parts(events, group_rows["events"], abort)
    if length == 0:
        for path in (data, events):
            path.unlink(missing_ok=True)
        return None
    task = pq.read_table(data, columns=["task"]).column("task")[0].as_py()
    chunks = 0
    if events.is_file():
        kinds = pq.read_table(events, columns=["kind"]).column("kind").to_pylist()
        chunks = kinds.count("chunk")
    return finish(root, index, task, {"length": length, "chunks": chunks, "end_reason": "unfinished"})


def rotate(root: Path, max_bytes: int, keep: int) -> list[int]:
    """Delete the oldest finished episodes while the dataset is over `max_bytes` (never episode `keep`)."""
    total = sum(p.stat().st_size for t in TABLES for p in (root / t).glob("episode_*.parquet"))
    deleted = []
    for index in sorted(_indexes(root, ".parquet")):
        if total <= max_bytes or index == keep:
            break
        for path in episode_paths(root, index):
            if path.exists():
                total -= path.stat().st_size
                path.unlink()
        deleted.append(index)
    return deleted
