"""Recording that survives (issue 19 B): a SIGKILLed service leaves an episode that reads back (all but the
last seconds), replays, and is joined at the next start (and added to the LeRobot dataset); a full disk (a real tmpfs) stops the recording with one
warning shown in `ctl status` while control goes on, and the service still stops within TimeoutStopSec; a
writer that falls behind stops the recording instead of queueing without bound; past the stop deadline the
writer keeps its buffered rows as a last part."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from onboard.episode_dataset import DATASET_DIR
from onboard.episode_store import episode_paths, not_in_dataset, parts_dir, read_episode
from onboard.recorder import EpisodeRecorder, ResidualTap
from onboard.runtime import Runtime
from policy_runtime.dataset import load_dataset
from tests.onboard.test_recording_dataset import add_what_is_left
from tests.service_helpers import devices_and_engine, run_serve, short_dir, sim_config
from tools.recording_faults import disk_full_while_recording, recording_child
from tools.replay import replay

RECORD_S = 6.0
LOST_S = 2.0
FPS = 15.0  # configs/standin.yaml


def test_a_sigkilled_episode_reads_back_replays_and_is_joined_at_the_next_start():
    d = short_dir()
    root = d / "episodes"
    with recording_child(d, root) as child:
        child.wait_ready()
        time.sleep(RECORD_S)
        child.kill()
    data, events = episode_paths(root, 0)
    assert not data.exists() and parts_dir(data).is_dir()  # the kill left the parts, nothing joined them
    (parts_dir(data) / ".000999.parquet.tmp").write_bytes(b"PAR1 a part the kill cut in half")

    meta, frames, event_rows = read_episode(data)
    assert len(frames) >= (RECORD_S - LOST_S) * FPS
    assert [r["frame_index"] for r in frames] == list(range(len(frames)))
    assert any(e["kind"] == "chunk" for e in event_rows)
    assert read_episode(parts_dir(data))[1] == frames  # named by its parts folder: the same episode
    report = replay(data)
    assert report.frames == len(frames) and report.identical, report.as_dict()

    # The next start joins it into the one file and indexes it; no new episode (the service starts idle).
    config = sim_config(d, recording={"enabled": True, "root": str(root), "images": True})
    run_serve(config, 1.0)
    assert data.is_file() and events.is_file()
    assert not parts_dir(data).exists() and not parts_dir(events).exists()
    assert pq.read_table(data).to_pylist() == frames
    lines = [json.loads(x) for x in (root / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [(x["episode_index"], x["end_reason"], x["length"]) for x in lines] == [
        (0, "unfinished", len(frames))
    ]
    assert lines[0]["chunks"] == sum(e["kind"] == "chunk" for e in event_rows)

    # ... and adds it to the LeRobot dataset: its rows up to the kill, each with both cameras' frames.
    add_what_is_left(config, root)
    assert not_in_dataset(root) == []
    dataset = load_dataset(root / DATASET_DIR, horizon=1)
    assert len(dataset) == len(frames) and set(dataset.tasks) == {frames[0]["task"]}
    assert np.allclose(dataset.proprio, [r["observation.state"] for r in frames], atol=1e-6)
    assert dataset.images(np.array([0, len(frames) - 1])).shape == (2, 2, 224, 224, 3)


def test_a_full_disk_stops_the_recording_with_one_warning_and_control_goes_on():
    row = disk_full_while_recording()
    if row.get("skipped"):
        pytest.skip(row["reaction"])
    recording = row["recording"]
    assert recording["state"] == "stopped" and recording["reason"].startswith("disk full"), row
    assert row["ticks_after_stop_1s"] >= 10, row  # 15 Hz: the fast loop did not stall
    assert len(row["warnings"]) == 1 and row["errors"] == [], row
    assert row["exit_code"] == 0 and row["stop_s"] <= row["timeout_stop_s"], row


def _recorder_of_one_tick(root):
    """A recorder on the stand-in runtime after one fast-loop tick, driven by calling its tick listener."""
    d = short_dir()
    config = sim_config(d, recording={"enabled": True, "root": str(root)})
    devices, engine = devices_and_engine(config)
    tap = ResidualTap(engine)
    runtime = Runtime(config, devices, tap)
    devices.arm.start()
    runtime.safety.seed(devices.arm.read_state())
    recorder = EpisodeRecorder(config, runtime, tap)
    t_ns = time.monotonic_ns()
    runtime.fast.tick(t_ns)
    runtime.stats.lateness_ms.add(0.0)
    runtime.stats.tick_compute_ms.add(0.0)
    return runtime, recorder, t_ns


def test_a_writer_that_falls_behind_stops_the_recording_and_counts_the_ticks_lost(caplog):
    root = short_dir() / "episodes"
    runtime, recorder, t_ns = _recorder_of_one_tick(root)
    recorder.queue_limit = 20  # the writer needs far longer per frame than a tick listener per enqueue
    caplog.set_level(logging.WARNING, logger="anchorvla.recorder")
    calls = 3000
    try:
        recorder.begin("flood")
        for _ in range(calls):
            recorder.on_tick(t_ns)
        status = recorder.status()
        recorder.close()
    finally:
        runtime.slow.close()
    assert status["state"] == "stopped" and "fell" in status["reason"], status
    assert not recorder.writer.is_alive()
    assert len([r for r in caplog.records if r.getMessage() == "recording stopped"]) == 1
    data, _ = episode_paths(root, 0)
    written = pq.read_table(data).num_rows  # everything accepted before the stop, in one finished file
    assert 0 < written < calls and status["frames_not_recorded"] == calls - written
    line = json.loads((root / "meta" / "episodes.jsonl").read_text())
    assert line["length"] == written and "fell" in line["end_reason"]


def test_past_the_stop_deadline_the_buffered_rows_become_a_part_and_the_next_start_joins_them():
    root = short_dir() / "episodes"
    runtime, recorder, t_ns = _recorder_of_one_tick(root)
    frames = 100  # 6 full parts of 15 and 10 rows buffered
    try:
        recorder.begin("deadline")
        for _ in range(frames):
            recorder.on_tick(t_ns)
        while recorder.writer.queue.qsize():
            time.sleep(0.01)
        recorder.joiner.abort.set()  # what close() does once CLOSE_S has passed
        recorder.close()
    finally:
        runtime.slow.close()
    data, _ = episode_paths(root, 0)
    assert not data.exists() and len(read_episode(data)[1]) == frames
    runtime, recorder, _ = _recorder_of_one_tick(root)  # the next start
    try:
        recorder.close()
    finally:
        runtime.slow.close()
    assert pq.read_table(data).num_rows == frames and not parts_dir(data).exists()
    line = json.loads((root / "meta" / "episodes.jsonl").read_text())
    assert (line["episode_index"], line["end_reason"], line["length"]) == (0, "unfinished", frames)
