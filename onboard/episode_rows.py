"""What the recorder's listeners hand the writer thread, and the rows (onboard/episode_schema.py) made of it.

The listeners run on the event-loop thread between fast-loop ticks, so they only keep references to what a
tick or a chunk produced (frozen dataclasses and arrays that nothing changes afterwards) plus a few scalars
that would move on, and enqueue them. Every conversion (lists, image bytes, the channel layout, the
numbering and cross-references of the episode) happens here, on the writer thread, in queue order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from onboard.loops import TickDecision, TickSnapshot
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel

CHUNKS_REMEMBERED = 64  # the schedule serves actions of the newest one or two chunks


class TickRecord(NamedTuple):
    snapshot: TickSnapshot
    decision: TickDecision
    residual: np.ndarray | None  # the correction this tick applied (ResidualTap)
    lateness_ms: float
    compute_ms: float
    frames: dict | None = None  # camera name -> the Frame this tick saw (recording.images), for the video


class ChunkRecord(NamedTuple):
    obs: Observation
    chunk: ActionChunk
    push_next_tick_ns: int  # the schedule's next tick when the chunk was pushed
    inference_ms: float | None


class OperatorRecord(NamedTuple):
    kind: str
    detail: str


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


class EpisodeRows:
    """One episode's rows: frame and event numbering, the chunk each planned action came from, the anchor
    frames already stored, and the command before each tick."""

    def __init__(
        self,
        index: int,
        task: str,
        channels: tuple[str, ...],
        previous_arm: np.ndarray | None,
        images: bool,
    ):
        self.index, self.task, self.channels, self.images = index, task, channels, images
        self.frames = 0
        self.chunks = 0
        self._seq = 0
        self._t0_ns = 0
        self._previous_arm = previous_arm
        # id(chunk) -> index in the episode, for the chunks the schedule may still serve. A tick record holds
        # its planned chunk, so an id cannot be reused while a row that needs it is still to be made.
        self._chunk_index: OrderedDict[int, int] = OrderedDict()
        self._anchor_stamps: dict[str, int] = {}  # t_ns of the anchor frames stored last in this episode

    def frame(self, t: TickRecord) -> dict:
        d, arm, base = t.decision, t.snapshot.arm, t.snapshot.base
        planned, cmd = d.planned, d.command
        if self.frames == 0:
            self._t0_ns = d.tick_ns
        chunk_index = self._chunk_index.get(id(planned.chunk)) if planned is not None else None
        state_base = base.velocity[:2].tolist() + [base.yaw_speed] if base is not None else [0.0, 0.0, 0.0]
        row = {
            "episode_index": self.index,
            "frame_index": self.frames,
            "timestamp": (d.tick_ns - self._t0_ns) / 1e9,
            "task": self.task,
            "observation.state": (
                arm.positions.tolist() if arm is not None else [float("nan")] * len(cmd.arm_positions)
            )
            + state_base,
            "action": self._action_vector(cmd),
            "tick_ns": d.tick_ns,
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
            "residual": _list(t.residual),
            "desired.arm": _list(d.desired.arm_positions),
            "desired.base": _list(d.desired.base.as_array()),
            "desired.hold": d.desired.hold,
            "command.arm": _list(cmd.arm_positions),
            "command.base": _list(cmd.base.as_array()),
            "command.hold": cmd.hold,
            "previous_command.arm": _list(self._previous_arm),
            "safety.faults": list(d.faults),
            "paused": d.paused,
            "timing.lateness_ms": t.lateness_ms,
            "timing.compute_ms": t.compute_ms,
        }
        self._previous_arm = cmd.arm_positions
        self.frames += 1
        return row

    def _action_vector(self, cmd) -> list[float]:
        """The sent command in the policy's channel order (what a policy trained on this data outputs)."""
        values = {arm_channel(j): p for j, p in zip(cmd.joint_names, cmd.arm_positions, strict=True)}
        values.update(zip(BASE_CHANNELS, cmd.base.as_array(), strict=True))
        return [float(values.get(c, 0.0)) for c in self.channels]

    def _event(self, kind: str, detail: str = "", **fields) -> dict:
        row = {
            "episode_index": self.index,
            "seq": self._seq,
            "before_frame": self.frames,
            "kind": kind,
            "detail": detail,
            **fields,
        }
        self._seq += 1
        return row

    def operator(self, o: OperatorRecord) -> dict:
        return self._event(o.kind, o.detail)

    def chunk(self, c: ChunkRecord) -> dict:
        chunk, obs = c.chunk, c.obs
        index = self.chunks
        self.chunks += 1
        self._chunk_index[id(chunk)] = index
        self._chunk_index.move_to_end(id(chunk))
        while len(self._chunk_index) > CHUNKS_REMEMBERED:
            self._chunk_index.popitem(last=False)
        anchors = None
        stamps = {n: f.t_ns for n, f in obs.anchor_frames.items()}
        if self.images and stamps and stamps != self._anchor_stamps:
            anchors, self._anchor_stamps = _encode_frames(obs.anchor_frames), stamps
        return self._event(
            "chunk",
            chunk_index=index,
            push_next_tick_ns=c.push_next_tick_ns,
            t_obs_ns=chunk.t_obs_ns,
            dt_ns=chunk.dt_ns,
            actions=np.asarray(chunk.actions, dtype=np.float64).ravel().tolist(),
            horizon=len(chunk),
            anchor_index=chunk.anchor_index,
            scores=_list(chunk.scores),
            inference_ms=c.inference_ms,
            gripper=None
            if chunk.gripper is None
            else {**vars(chunk.gripper), "logits": _list(chunk.gripper.logits)},
            images=_encode_frames(obs.frames) if self.images else None,
            anchor_images=anchors,
        )
