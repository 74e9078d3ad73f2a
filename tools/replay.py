"""`anchorvla replay EPISODE`: re-run the schedule, residual and safety decisions on a recorded episode.

The replay builds the same `Runtime` the controller runs (from the config stored in the episode, or
`--config` to ask "what would these settings have done"), feeds its fast loop the recorded measurements
and residuals through replay devices, applies the recorded chunks and operator commands at the points they
happened, and compares each tick's decision with the recording: the planned action (chunk, index, values),
the desired command, the command sent, the latched faults and the pause state. Comparisons are exact.

The residual model itself is not re-run (chunk contexts are not recorded): the recorded corrections are
fed in, and how they are applied is re-run.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anchorvla.errors import DeviceError, UserError
from drivers.types import ArmState, BaseState, Command
from onboard.config import Config, load_config
from onboard.control import Operator, Peer
from onboard.episode_store import read_episode
from onboard.runtime import Devices, Runtime
from policy_runtime.types import ActionChunk, GripperPlan

log = logging.getLogger("anchorvla.replay")


class _ReplayArm:
    """Answers with the recorded measurement of the tick being replayed (raises where the device was silent)."""

    def __init__(self, joint_names: tuple[str, ...]):
        self.joint_names = joint_names
        self.state: ArmState | None = None

    def read_state(self) -> ArmState:
        if self.state is None:
            raise DeviceError("recorded: no answer at this tick")
        return self.state

    def write_goal(self, positions) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class _ReplayBase(_ReplayArm):
    def __init__(self):
        super().__init__(())

    def move(self, vx, vy, wz) -> None:
        pass

    def stop_move(self) -> None:
        pass


class _ReplayEngine:
    """Only what the fast loop asks of an engine: its channels and the recorded residual correction."""

    def __init__(self, channels: tuple[str, ...]):
        self.channels = channels
        self.next_residual: np.ndarray | None = None

    def residual(self, obs, chunk, j, planned):
        return self.next_residual

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class ReplayReport:
    episode: Path
    frames: int = 0
    differing_frames: int = 0
    by_field: Counter = field(default_factory=Counter)
    first: list[tuple[int, str, str, str]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.differing_frames == 0

    def as_dict(self) -> dict:
        return {
            "episode": str(self.episode),
            "frames": self.frames,
            "differing_frames": self.differing_frames,
            "by_field": dict(self.by_field),
            "first_differences": [
                {"frame": f, "field": n, "recorded": r, "replayed": p} for f, n, r, p in self.first
            ],
        }


def _arr(values) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def _arm_state(row: dict, joints: tuple[str, ...]) -> ArmState | None:
    if row["arm.positions"] is None:
        return None
    return ArmState(row["tick_ns"], joints, _arr(row["arm.positions"]), _arr(row["arm.velocities"]))


def _base_state(row: dict) -> BaseState | None:
    if row["base.position"] is None:
        return None
    return BaseState(
        row["tick_ns"],
        _arr(row["base.position"]),
        row["base.yaw"],
        _arr(row["base.velocity"]),
        row["base.yaw_speed"],
        row["base.mode"],
        None,
        row["base.error_code"],
    )


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return a == b


def _show(value) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
    return repr(value)


def replay(episode: Path, config: Config | None = None, keep: int = 10) -> ReplayReport:
    try:
        meta, frames, events = read_episode(episode)
    except FileNotFoundError as exc:
        raise UserError(
            f"episode not found: {exc} (give a data/episode_NNNNNN.parquet of a recording, or the "
            "episode_NNNNNN.parts folder of one that was cut short)"
        ) from None
    if "anchorvla.config" not in meta:
        raise UserError(f"{episode}: not an anchorvla episode (no anchorvla.config metadata)")
    config = config or Config.model_validate_json(meta["anchorvla.config"])
    joints = tuple(json.loads(meta["anchorvla.joint_names"]))
    channels = tuple(json.loads(meta["anchorvla.channels"]))
    arm = _ReplayArm(joints)
    has_base = any(r["base.position"] is not None for r in frames)
    base = _ReplayBase() if has_base else None
    engine = _ReplayEngine(channels)
    runtime = Runtime(config, Devices(arm, base, []), engine)
    operator = Operator(runtime)
    fast = runtime.fast
    events_before: dict[int, list[dict]] = defaultdict(list)
    for ev in events:
        events_before[ev["before_frame"]].append(ev)
    chunk_index: dict[int, int] = {}
    report = ReplayReport(Path(episode))

    def differ(frame: int, name: str, recorded, replayed) -> bool:
        if _same(recorded, replayed):
            return False
        report.by_field[name] += 1
        if len(report.first) < keep:
            report.first.append((frame, name, _show(recorded), _show(replayed)))
        return True

    if frames and frames[0]["previous_command.arm"] is not None:
        seed = Command(frames[0]["tick_ns"], joints, _arr(frames[0]["previous_command.arm"]))
        fast.last_command = seed
        runtime.safety.continue_from(seed)  # the rate limits start from the command before the episode
    try:
        for i, row in enumerate(frames):
            for ev in events_before.get(i, []):
                if ev["kind"] == "chunk":
                    actions = np.asarray(ev["actions"], dtype=np.float64).reshape(
                        ev["horizon"], len(channels)
                    )
                    gripper = ev.get("gripper")
                    chunk = ActionChunk(
                        ev["t_obs_ns"], ev["dt_ns"], channels, actions, ev["anchor_index"], _arr(ev["scores"]),
                        gripper=None if gripper is None else GripperPlan(**{**gripper, "logits": _arr(gripper["logits"])}),
                    )  # fmt: skip
                    chunk_index[id(chunk)] = ev["chunk_index"]
                    runtime.schedule.push(chunk, ev["push_next_tick_ns"])
                else:
                    try:
                        operator.apply(ev["kind"], {"reason": ev["detail"]}, Peer("replay"))
                    except UserError as exc:
                        differ(i, f"operator {ev['kind']}", "accepted", f"refused: {exc}")
            arm.state = _arm_state(row, joints)
            if base is not None:
                base.state = _base_state(row)
            engine.next_residual = _arr(row["residual"])
            fast.tick(row["tick_ns"])
            d = fast.last_decision
            planned = d.planned
            checks = [
                (
                    "plan.chunk_index",
                    row["plan.chunk_index"],
                    chunk_index.get(id(planned.chunk)) if planned else None,
                ),
                ("plan.j", row["plan.j"], planned.j if planned else None),
                ("plan.action", _arr(row["plan.action"]), planned.action if planned else None),
                ("desired.arm", _arr(row["desired.arm"]), d.desired.arm_positions),
                ("desired.base", _arr(row["desired.base"]), d.desired.base.as_array()),
                ("desired.hold", row["desired.hold"], d.desired.hold),
                ("command.arm", _arr(row["command.arm"]), d.command.arm_positions),
                ("command.base", _arr(row["command.base"]), d.command.base.as_array()),
                ("command.hold", row["command.hold"], d.command.hold),
                ("safety.faults", list(row["safety.faults"]), list(d.faults)),
                ("paused", row["paused"], d.paused),
            ]
            if any([differ(i, name, rec, rep) for name, rec, rep in checks]):
                report.differing_frames += 1
            report.frames += 1
    finally:
        runtime.slow.close()
    return report


def format_report(report: ReplayReport) -> str:
    lines = [f"episode {report.episode}: {report.frames} frames replayed"]
    if report.identical:
        lines.append("decisions: identical on every frame (plan, desired, command, faults, pause)")
        return "\n".join(lines)
    lines.append(f"decisions differ on {report.differing_frames} of {report.frames} frames")
    for name, count in report.by_field.most_common():
        lines.append(f"  {name}: {count} frames")
    lines.append("first differences (frame, field: recorded -> replayed):")
    for frame, name, rec, rep in report.first:
        lines.append(f"  {frame:6d} {name}: {rec} -> {rep}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "episode", type=Path, help="a recorded episode: RECORDING_ROOT/data/episode_NNNNNN.parquet"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="replay under this config instead of the recorded one"
    )
    parser.add_argument("--show", type=int, default=10, help="how many differences to list")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    report = replay(args.episode, config, keep=args.show)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0 if report.identical else 1
