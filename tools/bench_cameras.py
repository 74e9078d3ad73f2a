"""`anchorvla bench cameras`: two-camera RealSense playback through librealsense, real time beside as fast as
read, in the same run: frame rate, timestamp jitter (|mapped frame interval - recorded period|, real time only:
as fast as read, frames are stamped when they arrive) and the frame age at the moment the newest frame is read;
plus the synthetic cameras' render time per view.

The two recordings are made first, side by side, from the synthetic cameras' views of the emulated world (so
the files hold 224x224 images like the policy's) with librealsense's software device and recorder.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VIEWS = ("third_person", "wrist")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=90, help="frames per recording")
    parser.add_argument("--fps", type=int, default=30, help="recorded frame rate")
    parser.add_argument("--size", type=int, default=224, help="image width and height")


def synthetic_frames(n: int, size: int, fps: int) -> tuple[dict[str, list[np.ndarray]], dict[str, float]]:
    """n frames per view of the arm sweeping over a cube, and the median render time per view (ms)."""
    from drivers.emulated.cameras import SyntheticCamera
    from drivers.emulated.world import World, WorldObject

    world = World()
    world.objects["cube"] = WorldObject("cube", np.array([0.45, -0.1, 0.03]), 0.03, (220, 40, 40))
    cams = {v: SyntheticCamera(v, world, v, size, size, fps) for v in VIEWS}
    images: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    render_ms: dict[str, list[float]] = {v: [] for v in VIEWS}
    for i in range(n):
        s = i / max(1, n - 1)
        world.set_joints(np.array([0.6 * np.sin(2 * np.pi * s), 0.9 * s, 0.5, 0.6, 0.0, 0.5]))
        world.set_base_pose(0.2 * s, 0.0, 0.1 * s)
        for v, cam in cams.items():
            t0 = time.perf_counter()
            images[v].append(cam.render_now().image)
            render_ms[v].append((time.perf_counter() - t0) * 1e3)
    return images, {v: float(np.median(ms)) for v, ms in render_ms.items()}


def play(paths: dict[str, Path], fps: int, realtime: bool) -> dict[str, dict]:
    """Play both recordings at once, reading each camera's newest frame every millisecond."""
    from drivers.realsense import RealSenseCamera

    cams = [RealSenseCamera(v, path=paths[v], fps=fps, realtime=realtime) for v in VIEWS]
    seen: dict[str, list[tuple[int, object]]] = {v: [] for v in VIEWS}
    t0 = time.monotonic()
    for cam in cams:
        cam.start()
    try:
        while not all(c.stats().ended for c in cams) and time.monotonic() - t0 < 60:
            for cam in cams:
                frame, now = cam.latest(), time.monotonic_ns()
                if frame is not None and (not seen[cam.name] or seen[cam.name][-1][1].seq != frame.seq):
                    seen[cam.name].append((now, frame))
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        stats = {c.name: c.stats() for c in cams}
    finally:
        for cam in cams:
            cam.stop()
    out = {}
    period_ms = 1e3 / fps
    for v in VIEWS:
        frames = [f for _, f in seen[v]]
        interval = np.diff([f.t_ns for f in frames]) / 1e6
        error = np.abs(interval - period_ms)
        ages = [(now - f.t_ns) / 1e6 for now, f in seen[v]]
        timed = (
            realtime and len(interval) > 0
        )  # as fast as read, frames are stamped as they arrive: no rate to hold
        out[v] = {
            "frames_in_file": stats[v].frames,
            "frames_seen": len(frames),
            "in_order": bool(np.all(interval > 0)),
            "read_fps": round(stats[v].frames / elapsed, 1),
            "stamp_fps": round(1e3 / float(np.median(interval)), 2) if timed else None,
            "jitter_ms_p50": round(float(np.median(error)), 3) if timed else None,
            "jitter_ms_p99": round(float(np.percentile(error, 99)), 3) if timed else None,
            "age_ms_p50": round(float(np.median(ages)), 3) if ages else None,
        }
    return out


def record_side_by_side(images: dict[str, list[np.ndarray]], fps: int, directory: Path) -> dict[str, Path]:
    from drivers.realsense_record import write_recording

    paths = {v: directory / f"{v}.db3" for v in VIEWS}
    threads = [
        threading.Thread(
            target=write_recording, args=(paths[v], images[v], fps), kwargs={"serial": f"{i + 1:012d}"}
        )
        for i, v in enumerate(VIEWS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return paths


def main(args: argparse.Namespace):
    images, render_ms = synthetic_frames(args.frames, args.size, args.fps)
    with tempfile.TemporaryDirectory(prefix="anchorvla-bench-cameras-") as tmp:
        paths = record_side_by_side(images, args.fps, Path(tmp))
        modes = {"real time": play(paths, args.fps, True), "as fast as read": play(paths, args.fps, False)}
    header = (
        f"{'mode':<16}{'camera':<14}{'frames':>7}{'seen':>6}{'in order':>9}{'read fps':>10}"
        f"{'stamp fps':>10}{'jitter p50 ms':>14}{'jitter p99 ms':>14}{'age p50 ms':>11}"
    )
    print(f"recorded: {args.frames} frames per camera at {args.fps} fps, {args.size}x{args.size} RGB8")
    print(header)
    print("-" * len(header))
    for mode, cams in modes.items():
        for v, r in cams.items():
            print(
                f"{mode:<16}{v:<14}{r['frames_in_file']:>7}{r['frames_seen']:>6}{str(r['in_order']):>9}"
                f"{r['read_fps']:>10}{r['stamp_fps']!s:>10}{r['jitter_ms_p50']!s:>14}{r['jitter_ms_p99']!s:>14}"
                f"{r['age_ms_p50']!s:>11}"
            )
    print("synthetic render ms (median): " + ", ".join(f"{v} {ms:.2f}" for v, ms in render_ms.items()))
    real = modes["real time"]
    ok = all(
        r["frames_in_file"] == args.frames
        and r["in_order"]
        and abs(r["stamp_fps"] - args.fps) < 0.03 * args.fps
        for r in real.values()
    )
    figures = {
        "frames": args.frames,
        "fps": args.fps,
        "size": args.size,
        "modes": modes,
        "render_ms_p50": render_ms,
    }
    return figures, ok
