"""Episode recording while running (operator start/pause/resume/estop), the parquet format, replay with
identical decisions, replay under changed settings reporting differences, and the size cap."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from anchorvla.cli import main as anchorvla
from anchorvla.commands.ctl import request
from anchorvla.errors import UserError
from onboard.standins import StandinEngine
from policy_runtime.types import GripperPlan
from tests.service_helpers import (
    devices_and_engine,
    run_serve,
    short_dir,
    sim_config,
    wait_for_socket,
    write_config,
)
from tools.replay import replay


class ResidualStandin(StandinEngine):
    """The stand-in policy plus a small deterministic residual correction and a discrete gripper decision whose
    logits swing through the hysteresis band (so the residual and the gripper paths are recorded). The logits
    alternate in sign from one action to the next, beyond the margin, so the decision switches both ways within
    any two ticks of a chunk, however short the episode and whatever the clock reads."""

    def infer(self, obs):
        chunk = super().infer(obs)
        logits = 3.0 * (-1.0) ** np.arange(len(chunk))
        plan = GripperPlan(chunk.channels.index("arm.gripper"), logits, 1.0, 0.0, 0.8)
        return dataclasses.replace(chunk, gripper=plan)

    def residual(self, obs, chunk, j, planned):
        return 0.01 * np.tanh(planned + obs.arm.positions.mean())


def operate(sock, steps):
    """Send (delay_s, command, words) steps to the control socket, like `anchorvla ctl` does."""
    import argparse

    wait_for_socket(sock)
    for delay, cmd, text in steps:
        time.sleep(delay)
        if callable(cmd):
            cmd()
            continue
        payload = {"cmd": cmd, **({"instruction": text} if cmd == "start" and text else {})}
        args = argparse.Namespace(config=None, socket=sock, tcp=None, token_file=None, timeout=5.0)
        reply = request(args, payload)
        assert reply["ok"], reply


@pytest.fixture(scope="module")
def recorded():
    """Two episodes: 'stack blocks' with a pause/resume and an estop; then 'wave' after reset-fault, during which
    the arm stops answering for a moment (the safety layer latches arm_comms and holds)."""
    d = short_dir()
    config = sim_config(
        d, recording={"enabled": True, "root": str(d / "episodes"), "images": True, "flush_every": 10}
    )
    devices, engine = devices_and_engine(config)
    engine = ResidualStandin(engine.joint_names, engine.dt_ns, compute_ms=40)
    steps = [
        (0.3, "start", "stack blocks"),
        (0.8, "pause", ""),
        (0.4, "resume", ""),
        (0.8, "estop", ""),
        (0.1, "reset-fault", ""),
        (0.1, "start", "wave"),
        (0.5, lambda: setattr(devices.arm, "silent", True), ""),
        (0.3, lambda: setattr(devices.arm, "silent", False), ""),
    ]
    result = run_serve(
        config, 4.5, client=lambda: operate(d / "control.sock", steps), devices=devices, engine=engine
    )
    return d / "episodes", result


def test_episodes_are_written_in_the_dataset_format(recorded):
    root, _ = recorded
    lines = [json.loads(x) for x in (root / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [(x["episode_index"], x["tasks"], x["end_reason"]) for x in lines] == [
        (0, ["stack blocks"], "estop"),
        (1, ["wave"], "shutdown"),
    ]
    table = pq.read_table(root / "data" / "episode_000000.parquet")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["anchorvla.format"] == "anchorvla-episode/1" and float(meta["anchorvla.fps"]) == 15.0
    rows = table.to_pylist()
    assert len(rows) == lines[0]["length"] > 20
    assert [r["frame_index"] for r in rows] == list(range(len(rows)))
    assert {r["episode_index"] for r in rows} == {0} and {r["task"] for r in rows} == {"stack blocks"}
    stamps = np.array([r["timestamp"] for r in rows])
    assert stamps[0] == 0 and np.allclose(np.diff(stamps)[np.diff(stamps) < 0.1], 1 / 15, atol=1e-4)
    channels = json.loads(meta["anchorvla.channels"])
    assert len(rows[5]["action"]) == len(channels) and len(rows[5]["observation.state"]) == 9
    assert any(r["paused"] for r in rows) and not rows[0]["paused"]  # the pause is in the episode
    assert any(r["residual"] is not None for r in rows)
    assert any(r["plan.chunk_index"] is not None for r in rows)
    events = pq.read_table(root / "events" / "episode_000000.parquet").to_pylist()
    kinds = [e["kind"] for e in events]
    assert kinds.count("chunk") == lines[0]["chunks"] and kinds[-1] == "estop"
    assert "pause" in kinds and "resume" in kinds
    chunk = next(e for e in events if e["kind"] == "chunk")
    assert len(chunk["actions"]) == chunk["horizon"] * len(channels)
    assert {i["camera"] for i in chunk["images"]} == {"third_person", "wrist"}


def test_recorded_episodes_replay_with_identical_decisions(recorded, capsys):
    root, _ = recorded
    wave = pq.read_table(root / "data" / "episode_000001.parquet").to_pylist()
    assert any(r["arm.positions"] is None for r in wave)  # the silent spell is in the recording
    assert "arm_comms" in wave[-1]["safety.faults"] and wave[-1]["command.hold"]
    # the gripper decision switched both ways (closed goal 0.0, open 0.8) and its plans are in the chunk events
    decided = {round(r["desired.arm"][-1], 6) for r in wave if not r["desired.hold"]}
    assert {0.0, 0.8} <= decided
    events = pq.read_table(root / "events" / "episode_000001.parquet").to_pylist()
    assert all(e["gripper"]["margin"] == 1.0 for e in events if e["kind"] == "chunk")
    for index in (0, 1):
        report = replay(root / "data" / f"episode_{index:06d}.parquet")
        assert report.frames > 10
        assert report.identical, report.as_dict()
    rc = anchorvla(["replay", str(root / "data" / "episode_000000.parquet")])
    assert rc == 0 and "identical on every frame" in capsys.readouterr().out


def test_replay_under_tighter_limits_reports_where_decisions_differ(recorded, tmp_path, capsys):
    root, _ = recorded
    episode = root / "data" / "episode_000000.parquet"
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(episode).metadata.items()}
    raw = json.loads(meta["anchorvla.config"])
    for limit in raw["safety"]["joints"].values():
        limit["max_velocity"] = 0.02  # rad/s: far below the stand-in's ~0.5 rad/s
    tighter = tmp_path / "tighter.yaml"
    tighter.write_text(yaml.safe_dump(raw))
    rc = anchorvla(["replay", str(episode), "--config", str(tighter), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 1 and "decisions differ on" in out and "command.arm" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["by_field"]["command.arm"] > 0
    assert (
        "plan.action" not in report["by_field"]
    )  # the plan is the same; only what safety let through changed
    first = next(x for x in report["first_differences"] if x["field"] == "command.arm")
    assert first["recorded"] != first["replayed"]


def test_replay_of_a_missing_episode_is_one_line(tmp_path):
    with pytest.raises(UserError, match="episode not found"):
        replay(tmp_path / "data" / "episode_000007.parquet")


def test_size_cap_deletes_the_oldest_episodes_and_long_episodes_stop_recording():
    d = short_dir()
    config = sim_config(
        d,
        service={"start_idle": False},
        recording={
            "enabled": True,
            "root": str(d / "episodes"),
            "max_total_mb": 0.000001,
            "max_episode_s": 0.5,
        },
    )
    run_serve(config, 2.0, client=lambda: operate(d / "control.sock", [(1.0, "start", "again")]))
    lines = [json.loads(x) for x in (d / "episodes" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert [x["end_reason"] for x in lines] == ["max_episode_s", "max_episode_s"]
    assert all(x["length"] == 8 for x in lines)  # 0.5 s at 15 Hz, rounded up to whole ticks
    kept = sorted(p.name for p in (d / "episodes" / "data").glob("*.parquet"))
    assert kept == ["episode_000001.parquet"]  # over the cap: the older one went, the newest stays


def test_unwritable_recording_root_is_one_clear_line(capsys):
    d = short_dir()
    (d / "file").write_text("not a directory")
    config_path = write_config(
        d / "c.yaml",
        service={"control": {"socket": str(d / "c.sock"), "group": "root"}},
        recording={"enabled": True, "root": str(d / "file" / "episodes")},
    )
    rc = anchorvla(["service", "run", "--config", str(config_path), "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "recording.root" in err and "Traceback" not in err
