"""`anchorvla bench faults`: fault scenarios run through the real Runtime against devices with fault injection.

Each scenario runs the controller (both loops, the safety layer, the stop sequences) with a stand-in policy,
injects one fault after the motion is under way, and checks three things: the fault was detected within
3 control ticks of its onset, the stated reaction happened, and not one command outside the envelope
reached a device (every arm goal and base velocity is audited as it is sent). Exit code 1 if any fails.

The devices come from a `DeviceFactory` (tools/fault_rig.py), the runner's one device parameter:
`--devices standin` (in-memory stand-ins, the default) or `--devices emulated` (the real SO-101 driver on the
pty servo emulator, the real Go2 client against the emulated Go2 on DDS over loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from anchorvla.errors import DeviceError, UserError
from onboard.config import Config
from onboard.control import Operator, Peer
from onboard.runtime import Devices, Runtime, run_event_loop
from onboard.standins import StandinEngine
from policy_runtime.types import ActionChunk, Observation
from safety.limits import Limits
from tools import config_faults, control_flood, recording_faults
from tools.envelope_audit import AuditedArm, AuditedBase, EnvelopeAudit
from tools.fault_rig import FACTORIES, DeviceFactory, Rig

INJECT_TICK = 20  # motion and chunks are flowing by then
AFTER_DETECTION_TICKS = 8  # keep running this long after the fault latched, to see the reaction
GIVE_UP_TICKS = 45  # a scenario whose fault never latches ends here (and fails)
DETECTION_TICKS = 3


class ScenarioEngine(StandinEngine):
    """The stand-in policy, able to turn slow or return NaN from a given moment; records when that began."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.slow_s: float | None = None
        self.first_slow_start_ns: int | None = None
        self.first_nan_ns: int | None = None

    def infer(self, obs: Observation) -> ActionChunk:
        if self.slow_s is not None:
            if self.first_slow_start_ns is None:
                self.first_slow_start_ns = time.monotonic_ns()
            time.sleep(self.slow_s)
        chunk = super().infer(obs)
        if self.nan_every and self.first_nan_ns is None:
            self.first_nan_ns = time.monotonic_ns()
        return chunk


@dataclass
class Context:
    rig: Rig
    runtime: Runtime
    engine: ScenarioEngine
    audit: EnvelopeAudit
    period_s: float
    injected_ns: int = 0
    fault_ns: int | None = None

    def fastest_joint(self) -> str:
        """The joint whose goal moves fastest now (a stall shows best on a moving joint)."""
        (_, a), (_, b) = self.audit.goals[-2], self.audit.goals[-1]
        speeds = np.abs(b - a)
        gripper = self.runtime.safety.limits.gripper
        if gripper >= 0:
            speeds[gripper] = 0.0  # a gripper stopped by what it holds is not a stall
        return self.runtime.safety.joint_names[int(np.argmax(speeds))]


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str  # the stated reaction
    fault: str | None  # the fault that must latch (None: the scenario ends the run instead)
    inject: Callable[[Context], None]
    onset: Callable[[Context], int | None] = lambda ctx: ctx.injected_ns
    reaction: Callable[[Context], tuple[bool, str]] = field(default=lambda ctx: safe_stop_taken(ctx))


def _arm_held(ctx: Context) -> tuple[bool, str]:
    """After the fault: the arm goal settles (the last goals are equal) and no base velocity other than 0."""
    after = [g for t, g in ctx.audit.goals if ctx.fault_ns is not None and t >= ctx.fault_ns]
    if len(after) < 3:
        return False, f"only {len(after)} arm goals after the fault"
    if not np.array_equal(after[-1], after[-2]):
        return False, "arm goal still moving at the end"
    return True, "arm holds"


def _base_stopped(ctx: Context) -> tuple[bool, str]:
    fault_ns = ctx.fault_ns or 0
    moving = [v for t, v in ctx.audit.moves if t >= fault_ns and any(v)]
    if moving:
        return False, f"base commanded {moving[0]} after the fault"
    if not any(t >= fault_ns for t in ctx.audit.stop_moves):
        return False, "no StopMove after the fault"
    return True, "base Move 0 + StopMove"


def safe_stop_taken(ctx: Context, arm_answers: bool = True) -> tuple[bool, str]:
    ok_base, base_text = _base_stopped(ctx)
    if not arm_answers:
        return ok_base, base_text + "; arm silent (holds its last goal)"
    ok_arm, arm_text = _arm_held(ctx)
    return ok_base and ok_arm, f"{base_text}; {arm_text}"


def _sigterm_reaction(ctx: Context) -> tuple[bool, str]:
    if ctx.runtime.exit_reason != "signal:SIGTERM":
        return False, f"exit reason {ctx.runtime.exit_reason}"
    stops = [t for t in ctx.audit.stop_moves if t >= ctx.injected_ns]
    zero_moves = [t for t, v in ctx.audit.moves if t >= ctx.injected_ns and not any(v)]
    if not stops or not zero_moves or zero_moves[-1] > stops[0]:
        return False, "no Move 0 then StopMove at exit"
    last_goal, last_state = ctx.audit.goals[-1][1], ctx.audit.states[-1].positions
    if np.max(np.abs(last_goal - last_state)) > 0.1:
        return False, f"exit goal {np.max(np.abs(last_goal - last_state)):.3f} rad from the measured pose"
    return True, "loops ended; Move 0 + StopMove; arm holds its measured pose"


def _sigterm_detected(ctx: Context) -> int | None:
    stops = [t for t in ctx.audit.stop_moves if t >= ctx.injected_ns]
    return stops[0] if stops else None


def _slow_onset(ctx: Context) -> int | None:
    """The slow inference becomes an overrun once it has run for the monitor's budget."""
    start = ctx.engine.first_slow_start_ns
    return None if start is None else start + int(ctx.runtime.safety.monitor.inference_budget_s * 1e9)


def _set_slow(ctx: Context) -> None:
    chunk_s = ctx.runtime.safety.execute_horizon * ctx.period_s
    ctx.engine.slow_s = 3.0 * chunk_s


def _set_nan(ctx: Context) -> None:
    ctx.engine.nan_every = 1


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "servo timeout",
        "arm_comms fault; base stop; arm holds its last goal",
        "arm_comms",
        lambda ctx: ctx.rig.faults.servo_timeout(),
        reaction=lambda ctx: safe_stop_taken(ctx, arm_answers=False),
    ),
    Scenario(
        "overheat",
        "servo_overheat fault; safe stop",
        "servo_overheat",
        lambda ctx: ctx.rig.faults.overheat("elbow_flex", 68.0),
    ),
    Scenario(
        "overload",
        "servo_overload fault; safe stop",
        "servo_overload",
        lambda ctx: ctx.rig.faults.overload("shoulder_lift", 0.97),
    ),
    Scenario(
        "stalled joint",
        "joint_stalled fault; safe stop",
        "joint_stalled",
        lambda ctx: ctx.rig.faults.stall(ctx.fastest_joint()),
    ),
    Scenario(
        "voltage sag",
        "servo_voltage fault; safe stop",
        "servo_voltage",
        lambda ctx: ctx.rig.faults.voltage_sag(5.5),
    ),
    Scenario(
        "base stops answering",
        "base_comms fault; StopMove tried (times out); arm holds",
        "base_comms",
        lambda ctx: ctx.rig.faults.base_silent(),
        reaction=lambda ctx: _base_silent_reaction(ctx),
    ),
    Scenario(
        "camera stall",
        "camera_stale hold while the frames are stale: arm holds, base Move 0 (no latch)",
        "camera_stale",
        lambda ctx: ctx.rig.faults.camera_stall(ctx.rig.devices.cameras[0].name),
        reaction=lambda ctx: _held_while_stale(ctx),
    ),
    Scenario(
        "NaN chunk",
        "chunks rejected; policy_nonfinite fault after 2 in a row; safe stop",
        "policy_nonfinite",
        _set_nan,
        onset=lambda ctx: ctx.engine.first_nan_ns,
    ),
    Scenario(
        "inference 3x slower than a chunk",
        "inference_overrun fault; safe stop",
        "inference_overrun",
        _set_slow,
        onset=_slow_onset,
    ),
    Scenario(
        "adapter unplugged",
        "arm_comms fault at once (link lost); base Move 0 + StopMove; the run ends (fault:arm_comms)",
        "arm_comms",
        lambda ctx: ctx.rig.faults.adapter_unplugged(),
        reaction=lambda ctx: _unplugged_reaction(ctx),
    ),
    Scenario(
        "camera unplugged",
        "camera_stale hold while it is gone (latest() raises): arm holds, base Move 0 (no latch)",
        "camera_stale",
        lambda ctx: ctx.rig.faults.camera_unplugged(ctx.rig.devices.cameras[0].name),
        reaction=lambda ctx: _held_while_stale(ctx),
    ),
    Scenario(
        "SIGTERM mid-motion",
        "loops end; Move 0 + StopMove; arm holds measured pose",
        None,
        lambda ctx: os.kill(os.getpid(), signal.SIGTERM),
        reaction=_sigterm_reaction,
    ),
)


def _held_while_stale(ctx: Context) -> tuple[bool, str]:
    """A hold condition: nothing latched, the base gets zero velocity every tick, the arm settles."""
    if ctx.runtime.safety.faults:
        return False, f"latched {[f.name for f in ctx.runtime.safety.faults]}"
    after = [v for t, v in ctx.audit.moves if t >= (ctx.fault_ns or 0)]
    if not after or any(any(v) for v in after):
        return False, "base not held at zero velocity"
    ok_arm, arm_text = _arm_held(ctx)
    return ok_arm, f"base Move 0 each tick; {arm_text}; no fault latched"


def _unplugged_reaction(ctx: Context) -> tuple[bool, str]:
    """The link is gone: nothing reaches the arm any more (the servos keep their last goal); the base is stopped
    and the run ends by itself with the fault as its reason."""
    ok_base, base_text = _base_stopped(ctx)
    fault = next((f for f in ctx.runtime.safety.faults if f.name == "arm_comms"), None)
    lost = fault is not None and "link lost" in fault.detail
    ended = ctx.runtime.exit_reason == "fault:arm_comms"
    return (
        ok_base and lost and ended,
        f"{base_text}; run ended: {ctx.runtime.exit_reason}; arm link lost (keeps its last goal)"
        if lost
        else f"{base_text}; arm_comms latched without a lost link",
    )


def _base_silent_reaction(ctx: Context) -> tuple[bool, str]:
    """The base cannot be stopped through a dead link (the Go2 stops on its own ~1 s after the last Move);
    what must happen: StopMove tried within its timeout, no further moves, the arm holds."""
    reports = [r for r in ctx.runtime.stops.reports if r.sequence == "safe_stop"]
    if not reports:
        return False, "no safe stop ran"
    steps = {s.name: s for s in reports[0].steps}
    tried = "base_stop_move" in steps and not steps["base_stop_move"].ok
    ok_arm, arm_text = _arm_held(ctx)
    return tried and ok_arm, f"StopMove tried ({steps['base_stop_move'].detail}); {arm_text}"


def scenario_config() -> Config:
    return Config.model_validate(
        {
            "robot": {
                "cameras": [
                    {"name": "third_person", "width": 64, "height": 64},
                    {"name": "wrist", "width": 64, "height": 64},
                ]
            },
            "policy": {
                "execute_horizon": 5,
                "residual": False,
                "standin": {
                    "compute_ms": 30,
                    "chunk_length": 10,
                    "amplitude": 0.5,
                    "period_s": 3.0,
                    "base_speed": 0.3,
                },
            },
            "control": {"rate_hz": 15.0},
        }
    )


def controller(factory: DeviceFactory, config: Config) -> Context:
    """The Runtime on the factory's devices, every arm goal and base velocity audited, the scenario policy."""
    period_s = 1.0 / config.control.rate_hz
    rig = factory(config)
    joints = tuple(config.robot.arm.joint_names)
    audit = EnvelopeAudit(Limits.from_config(config.safety, joints), period_s)
    devices = Devices(
        AuditedArm(rig.devices.arm, audit), AuditedBase(rig.devices.base, audit), rig.devices.cameras
    )
    s = config.policy.standin
    engine = ScenarioEngine(
        joints,
        round(period_s * 1e9),
        compute_ms=s.compute_ms,
        chunk_length=s.chunk_length,
        amplitude=s.amplitude,
        period_s=s.period_s,
        base_speed=s.base_speed,
    )
    return Context(rig, Runtime(config, devices, engine), engine, audit, period_s)


def run_scenario(scenario: Scenario, factory: DeviceFactory, config: Config | None = None) -> dict:
    ctx = controller(factory, config or scenario_config())
    runtime, audit, period_s = ctx.runtime, ctx.audit, ctx.period_s
    ticks: dict = {"n": 0, "latched_at": None}

    def on_tick(_deadline_ns: int) -> None:
        ticks["n"] += 1
        n = ticks["n"]
        if n == INJECT_TICK:
            ctx.injected_ns = time.monotonic_ns()
            try:
                scenario.inject(ctx)
            except UserError as exc:  # this rig cannot produce the fault: the row says so and fails
                ticks["not_run"] = str(exc)
                runtime.stop("scenario not supported")
        waiting = n > INJECT_TICK and scenario.fault is not None and ticks["latched_at"] is None
        seen = [*runtime.safety.faults, *runtime.safety.conditions.values()] if waiting else []
        found = next((f for f in seen if f.name == scenario.fault), None)
        if found is not None:
            ticks["latched_at"], ticks["detected_ns"] = n, found.t_ns
        done = ticks["latched_at"] is not None and n >= ticks["latched_at"] + AFTER_DETECTION_TICKS
        if done or n >= INJECT_TICK + GIVE_UP_TICKS:
            runtime.stop("scenario over")

    runtime.fast.tick_listeners.append(on_tick)
    summary = run_event_loop(runtime.run(duration_s=(INJECT_TICK + GIVE_UP_TICKS + 15) * period_s))

    faults = {f.name: f for f in runtime.safety.faults}
    detected_ns = _sigterm_detected(ctx) if scenario.fault is None else ticks.get("detected_ns")
    ctx.fault_ns = detected_ns
    onset_ns = scenario.onset(ctx)
    detected_ms = None if detected_ns is None or onset_ns is None else (detected_ns - onset_ns) / 1e6
    if "not_run" in ticks:
        reaction_ok, reaction = False, f"not run: {ticks['not_run']}"
    elif detected_ns is None:
        reaction_ok, reaction = False, "fault not detected"
    else:
        reaction_ok, reaction = scenario.reaction(ctx)
    in_time = detected_ms is not None and detected_ms <= DETECTION_TICKS * period_s * 1e3
    return {
        "scenario": scenario.name,
        "expected": scenario.expected,
        "detected_after_ms": None if detected_ms is None else round(detected_ms, 1),
        "reaction": reaction,
        "out_of_envelope": len(audit.violations),
        "violations": audit.violations[:3],
        "faults": sorted(faults),
        "commands_audited": len(audit.goals) + len(audit.moves),
        "ticks": summary["ticks"],
        "overruns": summary["overruns"],
        "ok": bool(in_time and reaction_ok and not audit.violations),
    }


def run_scenarios(factory: DeviceFactory, scenarios: tuple[Scenario, ...] = SCENARIOS) -> list[dict]:
    return [run_scenario(s, factory) for s in scenarios]


def _row(ctx: Context, name: str, expected: str, detected_ms: float | None, reaction: str, ok: bool) -> dict:
    """A table row for a scenario with its own runner, from its context after the run."""
    a, r = ctx.audit, ctx.runtime
    return {
        "scenario": name,
        "expected": expected,
        "detected_after_ms": None if detected_ms is None else round(detected_ms, 1),
        "reaction": reaction,
        "out_of_envelope": len(a.violations),
        "violations": a.violations[:3],
        "faults": sorted(f.name for f in r.safety.faults),
        "commands_audited": len(a.goals) + len(a.moves),
        "ticks": r.stats.ticks,
        "overruns": r.stats.overruns,
        "ok": bool(ok and not a.violations),
    }


FIRST_FRAME_WAIT_S = 1.0
START_UP_S = 10.0  # the arm's and base's own start-up on top of that wait, at the most


def run_camera_never_delivers(factory: DeviceFactory) -> dict:
    """A camera that gives no frame from the start: start-up must end with one line naming it, within the first
    frame wait (plus the devices' own start-up), before any tick; nothing moves."""
    config = scenario_config()
    staleness = config.safety.staleness.model_copy(update={"first_frame_s": FIRST_FRAME_WAIT_S})
    config = config.model_copy(update={"safety": config.safety.model_copy(update={"staleness": staleness})})
    ctx = controller(factory, config)
    camera = ctx.rig.devices.cameras[0]
    camera.blank = True
    t0 = time.monotonic()
    try:
        run_event_loop(ctx.runtime.run(60.0))
        error = None
    except DeviceError as exc:
        error = str(exc)
    elapsed_ms = (time.monotonic() - t0) * 1e3
    moved = [v for _, v in ctx.audit.moves if any(v)]
    ok = (
        error is not None
        and "\n" not in error
        and f"camera '{camera.name}'" in error
        and elapsed_ms <= (FIRST_FRAME_WAIT_S + START_UP_S) * 1e3
        and ctx.runtime.stats.ticks == 0
        and not moved
    )
    return _row(
        ctx,
        "camera never delivers",
        f"start-up ends with one line within the {FIRST_FRAME_WAIT_S:g} s first-frame wait; no tick, no motion",
        elapsed_ms,
        f"one line: {error}" if error else f"started without the camera ({ctx.runtime.stats.ticks} ticks)",
        ok,
    )


ESTOP_TRIALS = 50
ESTOP_EVERY_TICKS = 4  # e-stop, measure two ticks later, reset and start, next e-stop two ticks after that


def run_estop_latency(factory: DeviceFactory, trials: int = ESTOP_TRIALS) -> dict:
    """Operator e-stops (onboard.control's Operator, as `anchorvla ctl estop` applies them) at random moments of
    the tick, mid-motion: the latency from the command to Move 0 on the base's wire (the emulated Go2's DDS
    reader; the stand-in's call) and to the arm's hold goal, whichever comes last; p99 over the trials against
    one control period. Between trials: reset-fault and start, as an operator would."""
    ctx = controller(factory, scenario_config())
    runtime, audit, period_ns = ctx.runtime, ctx.audit, round(ctx.period_s * 1e9)
    operator, peer = Operator(runtime), Peer("bench faults")
    rng = random.Random(0)
    latencies_ms: list[float] = []
    problems: list[str] = []
    trial: dict = {"fire_at": INJECT_TICK, "t0": None, "tick": 0}

    def estop() -> None:
        trial["t0"], trial["tick"] = time.monotonic_ns(), runtime.stats.ticks
        _, device_part = operator.begin("estop", {"reason": "bench"}, peer)
        # the base's StopMove, off the event loop as the control endpoint runs it
        threading.Thread(target=device_part, name="estop-devices", daemon=True).start()

    def measure(t0: int) -> None:
        # The last Move received is the e-stop's Move 0 (one writer, in order; the fast loop sends none once
        # latched): an earlier one can be the tick's own Move still in flight at t0.
        moves = ctx.rig.faults.wire_moves(t0)
        goals = [t for t, _ in audit.goals if t >= t0]
        if not moves or not goals:
            problems.append(f"no {'Move' if not moves else 'arm goal'} after an e-stop")
        else:
            latencies_ms.append((max(moves[-1], goals[0]) - t0) / 1e6)
        if any(any(v) for t, v in audit.moves if t >= t0):
            problems.append("a base velocity other than 0 after an e-stop")

    def on_tick(_deadline_ns: int) -> None:
        n = runtime.stats.ticks
        if n == trial["fire_at"]:
            trial["fire_at"] = None
            asyncio.get_running_loop().call_later(rng.uniform(0.0, period_ns / 1e9), estop)
        elif trial["t0"] is not None and n >= trial["tick"] + 2:
            measure(trial["t0"])
            trial["t0"], trial["fire_at"] = None, n + ESTOP_EVERY_TICKS - 2
            if len(latencies_ms) + len(problems) >= trials:
                runtime.stop("trials done")
            operator.apply("reset-fault", {}, peer)
            operator.apply("start", {}, peer)

    runtime.fast.tick_listeners.append(on_tick)
    run_event_loop(runtime.run(duration_s=(INJECT_TICK + (trials + 5) * ESTOP_EVERY_TICKS) * ctx.period_s))
    lat = np.array(latencies_ms) if latencies_ms else np.array([np.inf])
    p50, p99, worst = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
    period_ms = period_ns / 1e6
    ok = len(latencies_ms) == trials and not problems and p99 <= period_ms
    row = _row(
        ctx,
        "operator e-stop latency",
        f"Move 0 on the base's wire and the arm's hold goal, p99 <= one tick ({period_ms:.1f} ms), {trials} trials",
        p99,
        f"p50 {p50:.2f} / p99 {p99:.2f} / max {worst:.2f} ms over {len(latencies_ms)} e-stops"
        + (f"; {problems[0]}" if problems else ""),
        ok,
    )
    row["estop_latency_ms"] = {"p50": round(p50, 3), "p99": round(p99, 3), "max": round(worst, 3)}
    return row


# Scenarios with their own runner on the chosen devices (--devices); each returns a row of the same table.
DEVICE_RUN_SCENARIOS: dict[str, Callable[[DeviceFactory], dict]] = {
    "camera never delivers": run_camera_never_delivers,
    "operator e-stop latency": run_estop_latency,
}


def run_device_scenarios(factory: DeviceFactory, only: list[str] | None) -> list[dict]:
    return [run(factory) for name, run in DEVICE_RUN_SCENARIOS.items() if _chosen(name, only)]


# Process-level scenarios (recording that survives): the service runs in a child process and the fault hits
# the process or its disk (tools/recording_faults.py); each returns a row of the same table. --devices does not
# apply (the child runs configs/standin.yaml); a row with "skipped" passes but is counted apart.
RECORD_S, QUICK_RECORD_S = 60.0, 6.0
PROCESS_SCENARIOS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "SIGKILL while recording": lambda args: recording_faults.sigkill_while_recording(
        QUICK_RECORD_S if args.quick else RECORD_S
    ),
    "disk full while recording": lambda args: recording_faults.disk_full_while_recording(),
    # Operator control and config files (tools/control_flood.py, tools/config_faults.py).
    "control flood": lambda args: control_flood.control_flood(),
    "config errors": lambda args: config_faults.config_errors(),
}


def run_process_scenarios(args: argparse.Namespace) -> list[dict]:
    return [run(args) for name, run in PROCESS_SCENARIOS.items() if _chosen(name, args.only)]


def _chosen(name: str, only: list[str] | None) -> bool:
    return not only or any(o.lower() in name.lower() for o in only)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--devices",
        choices=sorted(FACTORIES),
        default="standin",
        help="which devices the scenarios run against",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only scenarios whose name contains one of these",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"SIGKILL while recording: kill after {QUICK_RECORD_S:g} s instead of {RECORD_S:g} s",
    )


def print_table(rows: list[dict]) -> None:
    header = f"{'scenario':<34}{'detected ms':>12}{'commands':>10}{'out of env':>12}  {'result':<6}  reaction taken / expected"
    print(header)
    print("-" * len(header))
    for r in rows:
        det = "-" if r["detected_after_ms"] is None else f"{r['detected_after_ms']:.1f}"
        result = "SKIP" if r.get("skipped") else "PASS" if r["ok"] else "FAIL"
        print(
            f"{r['scenario']:<34}{det:>12}{r['commands_audited']:>10}{r['out_of_envelope']:>12}  {result:<6}  {r['reaction']}"
        )
        print(f"{'':<78}expected: {r['expected']}")
        if not r["ok"]:
            print(f"{'':<78}faults latched: {', '.join(r['faults']) or 'none'}")
            for v in r["violations"]:
                print(f"{'':<78}violation: {v}")


def main(args: argparse.Namespace):
    logging.getLogger("anchorvla").setLevel(logging.CRITICAL)  # the table says what happened
    chosen = tuple(s for s in SCENARIOS if _chosen(s.name, args.only))
    factory = FACTORIES[args.devices]
    rows = (
        run_scenarios(factory, chosen)
        + run_device_scenarios(factory, args.only)
        + run_process_scenarios(args)
    )
    print_table(rows)
    ok = bool(rows) and all(r["ok"] for r in rows)
    skipped = sum(bool(r.get("skipped")) for r in rows)
    print(
        f"\n{sum(r['ok'] for r in rows) - skipped}/{len(rows) - skipped} scenarios passed (detection within {DETECTION_TICKS} ticks, stated reaction, 0 commands outside the envelope)"
        + (f"; {skipped} skipped (see their line)" if skipped else "")
    )
    return {"devices": args.devices, "scenarios": rows}, ok
