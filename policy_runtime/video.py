"""MP4 video through PyAV (FFmpeg's libraries in a wheel): encode an episode's frames, append an encoded episode
to a file that holds several (LeRobotDataset v3 keeps many episodes per video file), decode a run of frames.

H.264 in yuv420p, which every FFmpeg, browser and LeRobot decoder reads, with a keyframe every 2 frames (as
LeRobot's own encoder) so any frame decodes after at most one other, and no B-frames, so packets come in
presentation order and appending is a plain copy of packets with shifted timestamps. Encoding is CPU work of
milliseconds per frame: run it off the control loop (a recorder thread, between episodes), never in a tick.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError

CODEC = "libx264"
PIX_FMT = "yuv420p"
GOP = 2
CRF = 18  # visually lossless for H.264; LeRobot's default (30, AV1) is coarser than small images bear


def encode(frames: np.ndarray, path: Path, fps: int, crf: int = CRF) -> None:
    """Write (T, H, W, 3) uint8 RGB frames to `path` at `fps`, frame k at k/fps seconds."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise UserError(
            f"video {path.name}: frames must be (T, H, W, 3) uint8 with T >= 1, got {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise UserError(f"video {path.name}: {width}x{height} images; H.264 (yuv420p) needs even sizes")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        options = {"g": str(GOP), "bf": "0", "crf": str(crf), "preset": "veryfast"}
        stream = out.add_stream(CODEC, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.time_base = Fraction(1, fps)
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def append(segment: Path, target: Path, fps: int) -> None:
    """`target` becomes itself followed by `segment` (both from `encode` with the same size and rate), by copying
    packets; `segment` is removed. A missing `target` is simply `segment` moved there."""
    import av

    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(segment), str(target))
        return
    tmp = target.with_name(target.stem + ".partial.mp4")
    copied = 0  # packets so far: one per frame (no B-frames)
    with av.open(str(tmp), "w", options={"movflags": "faststart"}) as out:
        stream = None
        for path, later in ((target, False), (segment, True)):
            with av.open(str(path)) as src:
                source = src.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(source)
                    stream.time_base = source.time_base
                shift = Fraction(copied, fps) / source.time_base if later else Fraction(0)
                if shift.denominator != 1:
                    raise ValueError(
                        f"{path}: time base {source.time_base} does not hold whole frames at {fps} fps"
                    )
                for packet in src.demux(source):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.pts += int(shift)
                    packet.dts += int(shift)
                    packet.stream = stream
                    out.mux(packet)
                    copied += 1
    tmp.replace(target)
    segment.unlink()


class Reader:
    """An open video file for repeated reads: each `frames` call seeks to the keyframe at or before its start."""

    def __init__(self, path: Path):
        import av

        self.path = path
        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def frames(self, start_s: float, count: int, fps: float) -> np.ndarray:
        """(count, H, W, 3) uint8 RGB: the `count` frames from the one shown at `start_s` seconds on."""
        target = Fraction(start_s).limit_denominator(1_000_000) / self.stream.time_base
        self.container.seek(int(target), stream=self.stream)
        frames = []
        for frame in self.container.decode(self.stream):
            if frame.time is not None and frame.time < start_s - 0.5 / fps:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                return np.stack(frames)
        raise UserError(
            f"{self.path}: {len(frames)} frames from {start_s:.3f} s on, the dataset says {count}"
        )

    def close(self) -> None:
        self.container.close()


def decode(path: Path, start_s: float, count: int, fps: float) -> np.ndarray:
    """`Reader(path).frames(start_s, count, fps)`, the file closed after."""
    reader = Reader(path)
    try:
        return reader.frames(start_s, count, fps)
    finally:
        reader.close()
