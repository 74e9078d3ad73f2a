"""LeRobotDataset on disk: the v3.0 layout we write, and the v3.0 and v2.1 layouts we read.

v3.0 (lerobot >= 0.4), many episodes per file:

    meta/info.json                  codebase_version "v3.0", fps, robot_type, features {name: {dtype, shape, names,
                                    ...}}, data_path / video_path templates, totals, chunks_size, file size caps
    meta/stats.json                 per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    meta/tasks.parquet              task_index, indexed by the task string (a pandas index)
    meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length, where its rows
                                    and video frames are (data/..., videos/<key>/..., from/to timestamps), its stats
    data/chunk-000/file-000.parquet one row per frame: the non-video features and timestamp, frame_index,
                                    episode_index, index (over the whole dataset), task_index
    videos/<key>/chunk-000/file-000.mp4        the frames of <key>, episode after episode

v2.1: meta/info.json (codebase_version "v2.1"), meta/tasks.jsonl, meta/episodes.jsonl,
data/chunk-000/episode_000000.parquet and videos/chunk-000/<key>/episode_000000.mp4, one file per episode.

Statistics follow LeRobot's: a vector feature's are per channel, an image feature's per colour channel in [0, 1]
with shape (3, 1, 1); the dataset's are the episodes' aggregated, quantiles as the count-weighted mean of the
episodes' (as LeRobot aggregates them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

CODEBASE_VERSION = "v3.0"
INFO = "meta/info.json"
STATS = "meta/stats.json"
TASKS = "meta/tasks.parquet"
EPISODES = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
STATE, ACTION = "observation.state", "action"
IMAGE_PREFIX = "observation.images."
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
# The per-frame bookkeeping features every LeRobot dataset has, in LeRobot's order.
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}


def next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


def vector_feature(names: list[str], units: list[str]) -> dict:
    """A float32 vector feature; `units` (one per name) is ours: LeRobot ignores keys it does not know."""
    return {"dtype": "float32", "shape": [len(names)], "names": list(names), "units": list(units)}


def video_feature(height: int, width: int, fps: int, codec: str, pix_fmt: str) -> dict:
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False,
        },
    }  # fmt: skip


def new_info(fps: int, robot_type: str, features: dict, has_video: bool) -> dict:
    index = {name: {"dtype": dtype, "shape": [1], "names": None} for name, dtype in INDEX_FEATURES.items()}
    return {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
        "total_episodes": 0, "total_frames": 0, "total_tasks": 0,
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": VIDEO_FILE_MB,
        "fps": fps, "splits": {}, "data_path": DATA_PATH, "video_path": VIDEO_PATH if has_video else None,
        "features": {**features, **index},
    }  # fmt: skip


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=4) + "\n")
    tmp.replace(path)


def write_parquet(path: Path, table) -> None:
    """Whole-file writes through a temporary name, so a reader never sees half a file."""
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="snappy")
    tmp.replace(path)


# --- statistics -----------------------------------------------------------------------------------------------


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """(T, d) or (T,) values -> per-channel min, max, mean, std, count and quantiles (shape (d,) or (1,))."""
    x = np.asarray(values, np.float64).reshape(len(values), -1)
    stats = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([len(x)]),
    }
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return stats


def image_stats(frames: np.ndarray, samples: int = 100) -> dict[str, np.ndarray]:
    """(T, H, W, 3) uint8 -> per colour channel stats in [0, 1], shape (3, 1, 1), over up to `samples` frames
    evenly spread (large images subsampled to about 150 px, as LeRobot does); exact, from each channel's
    histogram of its 256 values (quantiles: the lowest value whose cumulative share reaches q)."""
    picks = np.unique(np.round(np.linspace(0, len(frames) - 1, min(samples, len(frames)))).astype(int))
    step = max(1, max(frames.shape[1:3]) // 150) if max(frames.shape[1:3]) >= 300 else 1
    pixels = np.asarray(frames[picks, ::step, ::step], np.uint8).reshape(-1, 3)
    counts = np.stack([np.bincount(pixels[:, c], minlength=256) for c in range(3)]).astype(np.float64)
    values = np.arange(256) / 255.0
    share = counts / len(pixels)
    mean = share @ values
    stats = {
        "min": values[np.argmax(counts > 0, axis=1)],
        "max": values[255 - np.argmax(counts[:, ::-1] > 0, axis=1)],
        "mean": mean,
        "std": np.sqrt(np.maximum(share @ values**2 - mean**2, 0.0)),
    }
    cumulative = np.cumsum(share, axis=1)
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = values[np.argmax(cumulative >= q - 1e-12, axis=1)]
    out = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    return {**out, "count": np.array([len(picks)])}


def aggregate_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's stats over several parts (episodes, or the dataset so far and one more episode)."""
    counts = np.array([float(p["count"][0]) for p in parts])
    total = counts.sum()
    w = (counts / total).reshape(-1, *([1] * np.ndim(parts[0]["mean"])))
    means = np.stack([p["mean"] for p in parts])
    mean = (w * means).sum(0)
    var = (w * (np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)).sum(0)
    out = {
        "min": np.min(np.stack([p["min"] for p in parts]), 0),
        "max": np.max(np.stack([p["max"] for p in parts]), 0),
        "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)]),
    }  # fmt: skip
    for key in parts[0]:
        if key.startswith("q"):
            out[key] = (w * np.stack([p[key] for p in parts])).sum(0)
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


def stats_from_json(doc: dict) -> dict[str, dict[str, np.ndarray]]:
    return {f: {k: np.asarray(v) for k, v in s.items()} for f, s in doc.items()}


# --- tasks ----------------------------------------------------------------------------------------------------


def write_tasks(root: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes a frame indexed by the task (LeRobot reads it with pandas)."""
    import pyarrow as pa

    table = pa.table(
        {"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())}
    )
    pandas = {
        "index_columns": ["task"], "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }  # fmt: skip
    write_parquet(root / TASKS, table.replace_schema_metadata({"pandas": json.dumps(pandas)}))


def read_tasks(root: Path, info: dict) -> list[str]:
    """The task strings by task_index: v3 meta/tasks.parquet (the task is the pandas index), v2 meta/tasks.jsonl."""
    if info["codebase_version"].startswith("v2"):
        rows = [
            json.loads(line) for line in (root / "meta/tasks.jsonl").read_text().splitlines() if line.strip()
        ]
        by_index = {int(r["task_index"]): r["task"] for r in rows}
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(root / TASKS)
        meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
        names = [
            c for c in (*meta.get("index_columns", []), "task", "__index_level_0__") if isinstance(c, str)
        ]
        column = next((c for c in names if c in table.column_names), None)
        if column is None:
            raise UserError(f"dataset {root}: {TASKS} names no task column")
        by_index = dict(zip(table.column("task_index").to_pylist(), table.column(column).to_pylist()))
    return [by_index[i] for i in range(len(by_index))]


# --- reading --------------------------------------------------------------------------------------------------


@dataclass
class RawDataset:
    """What a LeRobot dataset holds, as stored: rows sorted by (episode, frame)."""

    info: dict
    state_feature: dict
    action_feature: dict
    cameras: tuple[str, ...]  # the part of the video feature names after observation.images.
    states: np.ndarray  # (N, P) as stored
    actions: np.ndarray  # (N, d)
    episode: np.ndarray  # (N,)
    frame: np.ndarray  # (N,)
    tasks: list[str]  # (N,)
    videos: dict[tuple[int, str], tuple[Path, float]]  # (episode, camera) -> (mp4, start in seconds)

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of each camera's images."""
        features = self.info["features"]
        return {c: tuple(features[IMAGE_PREFIX + c]["shape"][:2]) for c in self.cameras}

    @property
    def fps(self) -> float:
        return float(self.info["fps"])


def read_info(root: Path) -> dict:
    path = root / INFO
    if not path.is_file():
        raise UserError(
            f"dataset {root}: no {INFO} (a LeRobotDataset directory: `anchorvla sim record`, `anchorvla record` or "
            "LeRobot's own recorder make one)"
        )
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"dataset {root}: {INFO} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    version = str(info.get("codebase_version", ""))
    if not (version.startswith("v3.") or version in ("v2.0", "v2.1")):
        raise UserError(
            f"dataset {root}: codebase_version {version!r}; this reads LeRobotDataset v3.x and v2.0/v2.1"
        )
    return info


def read_dataset(root: Path) -> RawDataset:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = read_info(root)
    features = info.get("features", {})
    for name in (STATE, ACTION):
        if features.get(name, {}).get("dtype") not in ("float32", "float64"):
            raise UserError(f"dataset {root}: {INFO} declares no float vector feature {name!r}")
    cameras = tuple(
        name[len(IMAGE_PREFIX) :]
        for name, f in features.items()
        if name.startswith(IMAGE_PREFIX) and f["dtype"] == "video"
    )
    still = [name for name, f in features.items() if f.get("dtype") == "image"]
    if still:
        raise UserError(
            f"dataset {root}: image features {still} stored as PNG frames; only video features are read"
        )
    files = sorted((root / "data").glob("*/*.parquet"))
    if not files:
        raise UserError(f"dataset {root}: no parquet files under data/")
    columns = ["episode_index", "frame_index", "task_index", STATE, ACTION]
    try:
        table = pa.concat_tables(
            [pq.read_table(f, columns=columns) for f in files], promote_options="permissive"
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise UserError(f"dataset {root}: its data files lack or mangle a column ({exc})") from None
    episode = table.column("episode_index").to_numpy().astype(np.int64)
    frame = table.column("frame_index").to_numpy().astype(np.int64)
    order = np.lexsort((frame, episode))
    states = _matrix(table.column(STATE), features[STATE], root, STATE)[order]
    actions = _matrix(table.column(ACTION), features[ACTION], root, ACTION)[order]
    task_names = read_tasks(root, info)
    task_index = table.column("task_index").to_numpy().astype(np.int64)[order]
    episode, frame = episode[order], frame[order]
    videos = _video_locations(root, info, cameras, np.unique(episode))
    return RawDataset(
        info, features[STATE], features[ACTION], cameras, states, actions, episode, frame,
        [task_names[i] for i in task_index], videos,
    )  # fmt: skip


def _matrix(column, feature: dict, root: Path, name: str) -> np.ndarray:
    rows = column.to_pylist()
    width = int(feature["shape"][0])
    if any(r is None or len(r) != width for r in rows):
        raise UserError(f"dataset {root}: every {name} row must have {width} values (meta/info.json shape)")
    return np.asarray(rows, np.float64).reshape(len(rows), width)


def _video_locations(
    root: Path, info: dict, cameras: tuple[str, ...], episodes: np.ndarray
) -> dict[tuple[int, str], tuple[Path, float]]:
    if not cameras:
        return {}
    out = {}
    if info["codebase_version"].startswith("v2"):
        for e in episodes:
            for cam in cameras:
                rel = info["video_path"].format(
                    episode_chunk=int(e) // int(info["chunks_size"]),
                    video_key=IMAGE_PREFIX + cam,
                    episode_index=int(e),
                )
                out[(int(e), cam)] = (root / rel, 0.0)
        return out
    import pyarrow.parquet as pq

    rows = []
    for path in sorted((root / "meta/episodes").glob("*/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    by_episode = {int(r["episode_index"]): r for r in rows}
    for e in episodes:
        row = by_episode.get(int(e))
        if row is None:
            raise UserError(f"dataset {root}: episode {int(e)} has no row in meta/episodes")
        for cam in cameras:
            key = f"videos/{IMAGE_PREFIX}{cam}"
            rel = info["video_path"].format(
                video_key=IMAGE_PREFIX + cam, chunk_index=int(row[f"{key}/chunk_index"]),
                file_index=int(row[f"{key}/file_index"]),
            )  # fmt: skip
            out[(int(e), cam)] = (root / rel, float(row[f"{key}/from_timestamp"]))
    return out
