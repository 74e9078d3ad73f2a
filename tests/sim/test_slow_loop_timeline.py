"""`anchorvla run` and `anchorvla eval` share one slow loop: the runtime drives `SlowLoop`'s steps in real time,
eval drives the same steps on a virtual clock, and on a stand-in engine of the same latency both produce the same
chunk timeline (each chunk's observation tick and the tick it is first served from)."""

from __future__ import annotations

from pathlib import Path

from onboard.config import load_config
from onboard.devices import build_arm, build_base, build_cameras, build_engine
from onboard.loops import SlowLoop
from onboard.runtime import Devices, Runtime, run_event_loop
from sim.eval import run_episode, sim_cameras
from sim.lockstep import SimRobot

REPO = Path(__file__).resolve().parents[2]
LATENCY_MS = 80.0  # 1.2 ticks at 15 Hz
CHUNKS = 6
# Half a tick of margin puts each planned arrival mid-tick, so the real-time run's scheduling jitter (a
# millisecond or so) cannot move a chunk to another tick.
TIMING = {"control": {"start_margin_ticks": 0.5}}


def _spy_on_deliveries(monkeypatch) -> list[tuple[int, int, int]]:
    """(observation time, first serving tick, period) of every chunk SlowLoop.deliver hands to a schedule."""
    seen: list[tuple[int, int, int]] = []
    deliver = SlowLoop.deliver

    def spy(self, obs, chunk, latency_ns, now_ns):
        accepted = deliver(self, obs, chunk, latency_ns, now_ns)
        if accepted:
            seen.append((obs.t_ns, self.fast.next_deadline_ns, self.period_ns))
        return accepted

    monkeypatch.setattr(SlowLoop, "deliver", spy)
    return seen


def _timeline(deliveries: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """In ticks from the first chunk's observation: (observed at, served from) per chunk."""
    first = deliveries[0][0]
    return [(round((o - first) / p), round((s - first) / p)) for o, s, p in deliveries[:CHUNKS]]


def test_run_and_eval_drive_the_same_slow_loop_to_the_same_chunk_timeline(monkeypatch):
    seen = _spy_on_deliveries(monkeypatch)
    standin = {"policy": {"standin": {"compute_ms": LATENCY_MS, "chunk_length": 10}}, **TIMING}
    config = load_config(REPO / "configs/standin.yaml", standin)
    devices = Devices(build_arm(config), build_base(config), build_cameras(config))
    runtime = Runtime(config, devices, build_engine(config))
    run_event_loop(runtime.run(duration_s=3.0))
    realtime = _timeline(seen)

    seen.clear()
    lockstep = {"policy": {"engine": "standin", "residual": False, "standin": {"compute_ms": 0.0, "chunk_length": 10}}}
    config = load_config(REPO / "configs/sim.yaml", {**lockstep, **TIMING})
    engine = build_engine(config)
    run_episode(config, engine, SimRobot(sim_cameras(config)), "touch", seed=10_000, latency_ms=LATENCY_MS)
    virtual = _timeline(seen)

    assert len(realtime) == len(virtual) == CHUNKS
    assert realtime == virtual, f"real time {realtime} vs lockstep {virtual}"
    # Chunks follow one another, each served from a tick after its observation.
    assert all(served > observed for observed, served in virtual)
