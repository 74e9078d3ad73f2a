"""`anchorvla view DATASET [--episode N] [--save FILE.rrd | --connect URL]`: one episode of a dataset in rerun.

Every frame of the episode on the `frame` timeline (and its time in seconds on `time`): each camera's image under
`camera/<name>`, every observation.state channel under `state/<channel>` and every action channel under
`action/<channel>`, in the dataset's SI units (a LeRobot SO-101 dataset converts as training reads it). Without
--save or --connect it spawns the rerun viewer on this machine. Needs the liveview extra (rerun-sdk).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="a LeRobot dataset directory (v3, or v2.1)")
    parser.add_argument("--episode", type=int, default=0, help="episode index (default 0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--save", type=Path, default=None, help="write an .rrd file instead of opening a viewer"
    )
    where.add_argument(
        "--connect", default=None, help="a running viewer's URL, e.g. rerun+http://LAPTOP:9876/proxy"
    )


def _rerun():
    try:
        import rerun
    except ImportError:
        raise UserError("anchorvla view needs rerun-sdk: pip install 'anchorvla-onboard[liveview]'") from None
    return rerun


def log_episode(rec, dataset, episode: int) -> int:
    """Log every frame of `episode` of a loaded ChunkDataset into the recording stream; returns the frames logged."""
    rr = _rerun()
    rows = np.flatnonzero(dataset.episode == episode)
    if rows.size == 0:
        episodes = sorted(set(dataset.episode.tolist()))
        raise UserError(
            f"dataset {dataset.root} has no episode {episode} (it has {len(episodes)}: {episodes[0]}..{episodes[-1]})"
        )
    rows = rows[np.argsort(dataset.frame[rows])]
    images = dataset.images(rows) if dataset.cameras else None
    rec.log("task", rr.TextDocument(dataset.tasks[rows[0]]), static=True)
    for n, i in enumerate(rows):
        frame = int(dataset.frame[i])
        rec.set_time("frame", sequence=frame)
        rec.set_time("time", duration=frame / dataset.fps)
        for k, camera in enumerate(dataset.cameras):
            rec.log(f"camera/{camera}", rr.Image(images[n, k]))
        for channel, value in zip(dataset.proprio_layout, dataset.proprio[i], strict=True):
            rec.log(f"state/{channel}", rr.Scalars(float(value)))
        for channel, value in zip(dataset.action_layout, dataset.chunks[i, 0], strict=True):
            rec.log(f"action/{channel}", rr.Scalars(float(value)))
    return len(rows)


def main(args: argparse.Namespace) -> int:
    from policy_runtime.dataset import load_dataset

    rr = _rerun()
    dataset = load_dataset(args.dataset, horizon=1, with_images=True)
    rec = rr.RecordingStream("anchorvla-view")
    if args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(args.save))
    elif args.connect is not None:
        rec.connect_grpc(args.connect)
    else:
        rec.spawn()
    frames = log_episode(rec, dataset, args.episode)
    rec.flush()
    where = args.save or args.connect or "the spawned viewer"
    print(
        f"episode {args.episode} of {args.dataset}: {frames} frames, {len(dataset.cameras)} camera(s) -> {where}"
    )
    return 0
