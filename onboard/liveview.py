"""The live view: what the controller sees and plans, streamed to a rerun viewer on the laptop (or an .rrd).

Opt-in (`telemetry.liveview.enabled`) and an optional extra (`pip install 'anchorvla-onboard[liveview]'`,
i.e. rerun-sdk). Per chunk: the camera images, the chosen chunk's joint paths, the anchor scores and (when
the engine exposes `anchors`, shape (K, T, D)) the anchor candidates with the chosen one highlighted.
Per tick: commanded and measured joint positions, commanded and measured base velocity, timing.
rerun batches and sends from its own thread; each tick costs the fast loop a few `log` calls.
"""

from __future__ import annotations

import logging

import numpy as np

from drivers.errors import UserError
from onboard.config import Config
from onboard.journal import event
from onboard.runtime import Runtime
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation

log = logging.getLogger("anchorvla.liveview")

_CHOSEN = (255, 160, 0)
_CANDIDATE = (120, 120, 120, 90)


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
        self.joint_names = tuple(runtime.fast.arm.joint_names)
        self.chunks = 0

    def attach(self) -> None:
        self.runtime.fast.tick_listeners.append(self.on_tick)
        self.runtime.slow.chunk_listeners.append(self.on_chunk)

    def close(self) -> None:
        self.rec.flush()
        self.rec.disconnect()

    def _at(self, t_ns: int) -> None:
        self.rr.set_time("time", duration=t_ns / 1e9, recording=self.rec)

    def on_tick(self, tick_ns: int) -> None:
        rr, rec = self.rr, self.rec
        fast, stats = self.runtime.fast, self.runtime.stats
        decision, snap = fast.last_decision, fast.latest
        self._at(tick_ns)
        rec.log("joints/commanded", rr.Scalars(decision.command.arm_positions))
        if snap.arm is not None:
            rec.log("joints/measured", rr.Scalars(snap.arm.positions))
        rec.log("base/commanded", rr.Scalars(decision.command.base.as_array()))
        if snap.base is not None:
            rec.log(
                "base/measured",
                rr.Scalars([snap.base.velocity[0], snap.base.velocity[1], snap.base.yaw_speed]),
            )
        rec.log("timing/lateness_ms", rr.Scalars(stats.lateness_ms.recent(1)))
        rec.log("timing/tick_compute_ms", rr.Scalars(stats.tick_compute_ms.recent(1)))
        rec.log("state/hold", rr.Scalars([float(decision.command.hold)]))

    def on_chunk(self, obs: Observation, chunk: ActionChunk) -> None:
        rr, rec = self.rr, self.rec
        self._at(obs.t_ns)
        if self.chunks % self.config.image_every == 0:
            for name, frame in obs.frames.items():
                rec.log(f"cameras/{name}", rr.Image(frame.image))
        self.chunks += 1
        inference = self.runtime.stats.inference_ms.recent(1)
        if inference:
            rec.log("timing/inference_ms", rr.Scalars(inference))
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
