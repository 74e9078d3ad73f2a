"""The live view: what the controller sees and plans, streamed to a rerun viewer on the laptop (or an .rrd).

Opt-in (`telemetry.liveview.enabled`) and an optional extra (`pip install 'anchorvla-onboard[liveview]'`,
i.e. rerun-sdk). Per chunk: the camera images, the chosen chunk's joint paths, the anchor scores and (when
the engine exposes `anchors`, shape (K, T, D)) the anchor candidates with the chosen one highlighted.
Per tick: commanded and measured joint positions, commanded and measured base velocity, timing.

The listeners only copy a few arrays into a queue (never blocking: when the viewer falls behind, samples
are dropped and counted); a worker thread makes every rerun call, sending the per-tick series in columns
every `FLUSH_S`, so the fast loop does not pay for rerun's logging (`anchorvla bench service` measures it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from anchorvla.errors import UserError
from onboard.config import Config
from onboard.journal import event
from onboard.runtime import Runtime
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation

log = logging.getLogger("anchorvla.liveview")

_CHOSEN = (255, 160, 0)
_CANDIDATE = (120, 120, 120, 90)
FLUSH_S = 0.25
QUEUE_SIZE = 2000
_TICK_SERIES = (
    "joints/commanded",
    "joints/measured",
    "base/commanded",
    "base/measured",
    "timing/lateness_ms",
    "timing/tick_compute_ms",
    "state/hold",
)


def _import_rerun():
    try:
        import rerun
    except ImportError:
        raise UserError(
            "telemetry.liveview.enabled needs rerun-sdk, which is not installed: "
            "pip install 'anchorvla-onboard[liveview]' (or set telemetry.liveview.enabled: false)"
        ) from None
    return rerun


class LiveView:
    def __init__(self, config: Config, runtime: Runtime):
        self.rr = _import_rerun()
        self.config = config.telemetry.liveview
        self.runtime = runtime
        self.rec = self.rr.RecordingStream("anchorvla-onboard")
        if self.config.save is not None:
            self.config.save.parent.mkdir(parents=True, exist_ok=True)
            self.rec.save(str(self.config.save))
            where = str(self.config.save)
        elif self.config.connect is not None:
            self.rec.connect_grpc(self.config.connect)
            where = self.config.connect
        else:
            raise UserError(
                "telemetry.liveview needs connect (the laptop viewer's URL) or save (an .rrd path)"
            )
        event(log, logging.INFO, "live view on", to=where)
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.chunks = 0
        self._worker = threading.Thread(target=self._run, name="liveview", daemon=True)
        self._worker.start()

    def attach(self) -> None:
        self.runtime.fast.tick_listeners.append(self.on_tick)
        self.runtime.slow.chunk_listeners.append(self.on_chunk)

    def close(self) -> None:
        self._put(("quit", None))
        self._worker.join(timeout=10)
        self.rec.flush()
        self.rec.disconnect()
        if self.dropped:
            event(log, logging.WARNING, "live view dropped samples (viewer too slow)", dropped=self.dropped)

    def _put(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    # Listeners: on the event-loop thread, copy only.
    def on_tick(self, tick_ns: int) -> None:
        fast, stats = self.runtime.fast, self.runtime.stats
        d, snap = fast.last_decision, fast.latest
        nan3 = np.full(3, np.nan)
        measured_arm = (
            snap.arm.positions if snap.arm is not None else np.full(len(d.command.arm_positions), np.nan)
        )
        measured_base = (
            np.array([snap.base.velocity[0], snap.base.velocity[1], snap.base.yaw_speed])
            if snap.base is not None
            else nan3
        )
        values = (
            d.command.arm_positions,
            measured_arm,
            d.command.base.as_array(),
            measured_base,
            stats.lateness_ms.recent(1),
            stats.tick_compute_ms.recent(1),
            [float(d.command.hold)],
        )
        self._put(("tick", (tick_ns, values)))

    def on_chunk(self, obs: Observation, chunk: ActionChunk) -> None:
        with_images = self.chunks % self.config.image_every == 0
        self.chunks += 1
        frames = dict(obs.frames) if with_images else {}
        self._put(("chunk", (obs.t_ns, frames, chunk, self.runtime.stats.inference_ms.recent(1))))

    # Worker: every rerun call happens here.
    def _run(self) -> None:
        ticks: list = []
        next_flush = time.monotonic() + FLUSH_S
        while True:
            try:
                kind, item = self.queue.get(timeout=FLUSH_S)
            except queue.Empty:
                kind, item = "idle", None
            try:
                if kind == "tick":
                    ticks.append(item)
                elif kind == "chunk":
                    self._log_chunk(*item)
                if ticks and (kind == "quit" or time.monotonic() >= next_flush):
                    self._send_ticks(ticks)
                    ticks = []
                    next_flush = time.monotonic() + FLUSH_S
            except Exception as exc:  # the live view must never take the controller down
                event(log, logging.WARNING, "live view logging failed", error=exc)
            if kind == "quit":
                return

    def _send_ticks(self, ticks: list) -> None:
        rr = self.rr
        times = rr.TimeColumn("time", duration=np.array([t for t, _ in ticks], dtype=np.float64) / 1e9)
        for k, path in enumerate(_TICK_SERIES):
            rows = [np.asarray(values[k], dtype=np.float64) for _, values in ticks]
            column = rr.Scalars.columns(scalars=np.concatenate(rows)).partition(
                lengths=[len(r) for r in rows]
            )
            rr.send_columns(path, indexes=[times], columns=column, recording=self.rec)

    def _log_chunk(self, t_ns: int, frames: dict, chunk: ActionChunk, inference_ms: list) -> None:
        rr, rec = self.rr, self.rec
        rr.set_time("time", duration=t_ns / 1e9, recording=rec)
        for name, frame in frames.items():
            rec.log(f"cameras/{name}", rr.Image(frame.image))
        if inference_ms:
            rec.log("timing/inference_ms", rr.Scalars(inference_ms))
        steps = np.arange(len(chunk), dtype=np.float64)
        arm_columns = [i for i, c in enumerate(chunk.channels) if c not in BASE_CHANNELS]
        strips = [np.stack([steps, chunk.actions[:, i]], axis=1) for i in arm_columns]
        rec.log("plan/chunk", rr.LineStrips2D(strips, labels=[chunk.channels[i] for i in arm_columns]))
        if chunk.scores is not None:
            rec.log("plan/anchor_scores", rr.BarChart(np.asarray(chunk.scores, dtype=np.float64)))
        anchors = getattr(self.runtime.engine, "anchors", None)
        if anchors is not None and chunk.anchor_index is not None:
            anchors = np.asarray(anchors)
            t = np.arange(anchors.shape[1], dtype=np.float64)
            for i in arm_columns:
                lines = [np.stack([t, anchors[k, :, i]], axis=1) for k in range(anchors.shape[0])]
                colors = [_CHOSEN if k == chunk.anchor_index else _CANDIDATE for k in range(anchors.shape[0])]
                rec.log(f"plan/anchors/{chunk.channels[i]}", rr.LineStrips2D(lines, colors=colors))
