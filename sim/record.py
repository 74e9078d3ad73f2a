"""`anchorvla sim record --task T --episodes N --out DIR`: scripted-expert demonstrations into a LeRobotDataset.

Each episode runs the task's expert (sim/experts.py) in lockstep on a virtual clock against the
in-process emulated devices (sim/lockstep.py) at the control rate. What is recorded per tick: the proprio
(`PROPRIO_LAYOUT`, the goal's pose included; in the colour tasks `PROPRIO_NO_GOAL`, without it, unless
`--goal-label` keeps it as the goal probe's label; one dataset holds one layout, so plain and colour tasks are
recorded apart), both synthetic camera images (64 px, 96 px in the
colour tasks, where the targets must be told apart in them), the instruction, and the expert's action. What is
executed is that action plus smooth noise (in a share of the episodes), passed through the same safety envelope
as on the robot, so the demonstrations also show how to get back on track. Episodes the expert does not finish
are left out; after success a few ticks of holding still are kept, so the policy learns to stop.
Each episode is written (its videos encoded) as soon as it is recorded (policy_runtime/dataset_writer.py).

With `--policy CONFIG` the controller drives instead (the lockstep loops of `anchorvla eval`) and the expert
only labels: each tick records what the expert would command from the state the policy brought the arm to
(DAgger's labels), for the residual stage (`anchorvla train --residual-from`): in the experts' own recordings
the state at step j of a chunk is the one the expert's actions led to, so a residual trained there learns to
continue whatever the arm is doing; here the state is the one the plan led to, and the label is what the expert
would do from it. (On the demo policy this did not raise success: policies/demo/README.md.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS, BaseVelocity, Command

RATE_HZ = 15.0
IMAGE_SIZE = 64
# The colour tasks' balls cover 6-14 pixels at the start pose at 96 px (about half that at 64). Rendering both
# cameras costs about the same at either size (p50 3.0 ms at 64, 3.1 at 96, 3.4 at 128 px per tick over expert
# episodes, this 2-core VM): the spheres the arm is drawn with dominate, not the pixels.
COLOR_IMAGE_SIZE = 96
CAMERAS = ("third_person", "wrist")
PROPRIO_LAYOUT = (
    "base.vx", "base.vy", "base.wz", *(f"arm.{j}" for j in SO101_JOINTS), "goal.x", "goal.y", "goal.z",
)  # fmt: skip
PROPRIO_NO_GOAL = PROPRIO_LAYOUT[:-3]  # the colour tasks: the goal is found in the images
HOLD_AFTER_SUCCESS = 6  # ticks recorded after the task succeeded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", required=True, metavar="SUBCOMMAND")
    rec = sub.add_parser("record", help="record scripted-expert episodes into a dataset directory")
    rec.add_argument(
        "--task", required=True,
        help="touch | reach | lift | all, or the colour tasks touch_color | reach_color | lift_color | color "
        "(no goal in the proprio), or a comma-separated list of one kind",
    )  # fmt: skip
    rec.add_argument(
        "--episodes", required=True,
        help="successful episodes per task: N, or per task as 'touch=150,reach=250,lift=250'",
    )  # fmt: skip
    rec.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    rec.add_argument(
        "--goal-label", action="store_true",
        help="colour tasks: record goal.x/y/z in the proprio anyway, as the label of `train --goal-probe` (which "
        "takes it out of the policy's input)",
    )  # fmt: skip
    rec.add_argument("--seed", type=int, default=0, help="first episode seed")
    rec.add_argument(
        "--image-size", type=int, default=None,
        help=f"square camera images, pixels (default {IMAGE_SIZE}, {COLOR_IMAGE_SIZE} for the colour tasks)",
    )  # fmt: skip
    rec.add_argument(
        "--noise-share", type=float, default=0.7, help="share of episodes executed with noise (0..1)"
    )
    rec.add_argument(
        "--noise-scale", type=float, default=1.0,
        help="factor on the executed-action noise (per channel: base 0.05/0.03 m/s, 0.1 rad/s; joints 0.02 rad)",
    )  # fmt: skip
    rec.add_argument(
        "--policy", type=Path, default=None, metavar="CONFIG",
        help="the controller of this config (configs/sim.yaml) drives, as `anchorvla eval` runs it, and the "
        "expert only labels each tick: the residual stage's data (`anchorvla train --residual-from`)",
    )  # fmt: skip
    rec.add_argument(
        "--variant",
        default="",
        metavar="SPEC",
        help="with --policy: config overrides and drift as in `anchorvla eval --variant`, e.g. 'residual=off,slip=0.02'",
    )
    rec.add_argument(
        "--latency-ms", type=float, default=60.0, help="with --policy: virtual time each inference takes"
    )


class SmoothNoise:
    """Per-channel Ornstein-Uhlenbeck noise: correlated over ~0.5 s, like a hand pushing the arm off course."""

    def __init__(self, scale: np.ndarray, rng: np.random.Generator, dt_s: float, tau_s: float = 0.5):
        self.scale, self.rng = scale, rng
        self.decay = np.exp(-dt_s / tau_s)
        self.value = np.zeros_like(scale)

    def __call__(self) -> np.ndarray:
        kick = self.rng.normal(0.0, 1.0, self.scale.shape) * np.sqrt(1 - self.decay**2)
        self.value = self.decay * self.value + kick * self.scale
        return self.value


def episode_counts(spec: str, names: list[str]) -> dict[str, int]:
    """'--episodes' as {task: count}: one number for every task, or 'task=N,...' naming each of `names`."""
    if spec.strip().isdigit():
        counts = dict.fromkeys(names, int(spec))
    else:
        counts = {}
        for item in (s.strip() for s in spec.split(",") if s.strip()):
            name, _, count = item.partition("=")
            if not count.strip().isdigit():
                raise UserError(f"--episodes {spec!r}: use N or 'touch=150,reach=250' (got '{item}')")
            counts[name.strip()] = int(count)
        if sorted(counts) != sorted(names):
            raise UserError(f"--episodes {spec!r}: give a count for each of {', '.join(names)}")
    if min(counts.values()) < 1:
        raise UserError("--episodes must be >= 1")
    return counts


def record_episode(
    robot, task_name: str, seed: int, noisy: bool, noise_scale: float = 1.0, layout=PROPRIO_LAYOUT
):
    """One expert episode with the proprio `layout`; returns an EpisodeRecord, or None when the expert did not
    succeed."""
    from safety.config import SafetyConfig
    from safety.envelope import SafetyLayer
    from sim.experts import Expert

    dt_ns = round(1e9 / RATE_HZ)
    task = robot.start_episode(task_name, seed)
    expert = Expert(task, robot.world, dt_ns / 1e9)
    safety = SafetyLayer(SafetyConfig(), robot.arm.joint_names)
    noise = SmoothNoise(
        np.array([0.05, 0.03, 0.1, *([0.02] * 5), 0.0]) * (noise_scale if noisy else 0.0),
        np.random.default_rng([seed, 2]),
        dt_ns / 1e9,
    )
    tape = Tape(robot, task, layout)
    hold = None
    for _ in range(task.max_steps):
        arm, base = robot.arm.read_state(), robot.base.read_state()
        action = expert.act() if hold is None else hold
        tape.add(arm, base, action)
        executed = action + (noise() if hold is None else 0.0)
        desired = Command(robot.clock.now_ns, arm.joint_names, executed[3:], BaseVelocity(*executed[:3]))
        cmd = safety.filter(desired, arm, dt_ns / 1e9)
        robot.arm.write_goal(cmd.arm_positions)
        robot.base.move(cmd.base.vx, cmd.base.vy, cmd.base.wz)
        robot.clock.advance(dt_ns)
        robot.arm.read_state()
        robot.base.read_state()
        task.update(robot.world)
        status = task.status(robot.world)
        if status.failed:
            return None
        if status.success and hold is None:
            hold = np.concatenate([[0.0, 0.0, 0.0], action[3:]])  # stop and stay
            remaining = HOLD_AFTER_SUCCESS
        if hold is not None:
            remaining -= 1
            if remaining <= 0:
                return tape.record()
    return None


def proprio_layout(names: list[str], goal_label: bool = False) -> tuple[str, ...]:
    """The proprio layout of a dataset of tasks `names`: with the goal for the plain tasks, without for the colour
    tasks unless `goal_label` (`--goal-label`: the goal recorded for the goal probe, `train --goal-probe`, which
    takes it out of the policy's input); both kinds in one dataset is refused."""
    from sim.tasks import COLOR_TASKS

    colour = {n in COLOR_TASKS for n in names}
    if len(colour) > 1:
        raise UserError(
            f"--task {','.join(names)}: plain and colour tasks have different proprio layouts (goal.* or not); "
            "record them into separate datasets"
        )
    return PROPRIO_NO_GOAL if colour == {True} and not goal_label else PROPRIO_LAYOUT


class Tape:
    """An episode as it is recorded, tick by tick: the proprio in `layout` (the goal included where the layout has
    goal.*), each camera's current image, and the action to learn."""

    def __init__(self, robot, task, layout: tuple[str, ...]):
        from policy_runtime.preprocess import ProprioLayout

        self.robot, self.task = robot, task
        self.with_goal = "goal.x" in layout
        self.layout = ProprioLayout(layout, robot.arm.joint_names)
        self.states, self.actions = [], []
        self.images = {c.name: [] for c in robot.cameras}

    def add(self, arm, base, action: np.ndarray) -> None:
        goal = self.task.goal_in_arm_frame(self.robot.world) if self.with_goal else None
        self.states.append(self.layout.vector(arm, base, goal))
        for cam in self.robot.cameras:
            self.images[cam.name].append(cam.latest().image)
        self.actions.append(action)

    def record(self):
        from policy_runtime.dataset import EpisodeRecord

        return EpisodeRecord(
            np.asarray(self.states), np.asarray(self.actions), self.task.instruction,
            {k: np.stack(v) for k, v in self.images.items()},
        )  # fmt: skip


def record_policy_episode(
    config, engine, robot, task_name: str, seed: int, latency_ms: float, variant=None, layout=PROPRIO_LAYOUT
):
    """One episode the controller drives (the loops of `anchorvla eval`), labelled every tick with what the
    task's expert would command from that state: (EpisodeRecord, EpisodeResult). Failed episodes are kept up to
    where they ended: their states are those a correction is for. `variant`: the world's side of the eval variant
    (drift), a `WorldVariant`."""
    from sim.eval import run_episode
    from sim.experts import Expert

    dt_s = 1.0 / config.control.rate_hz
    labelled = {}

    def on_tick(task) -> None:
        if not labelled:
            labelled.update(
                tape=Tape(robot, task, layout), expert=Expert(task, robot.world, dt_s, follow_side=True)
            )
        labelled["tape"].add(robot.arm.read_state(), robot.base.read_state(), labelled["expert"].act())

    from sim.world_variants import UNCHANGED

    result = run_episode(
        config, engine, robot, task_name, seed, latency_ms, on_tick=on_tick, variant=variant or UNCHANGED
    )
    return labelled["tape"].record(), result


def main(args: argparse.Namespace) -> int:
    from sim.lockstep import SimRobot
    from sim.tasks import COLOR_TASKS, task_names

    if args.image_size is not None and not 8 <= args.image_size <= 512:
        raise UserError(f"--image-size {args.image_size}: use 8..512 pixels")
    if args.noise_scale < 0:
        raise UserError(f"--noise-scale must be >= 0 (got {args.noise_scale})")
    names = task_names(args.task)
    layout = proprio_layout(names, args.goal_label)
    counts = episode_counts(str(args.episodes), names)
    if args.policy is not None:
        return record_policy(args, names, counts, layout)
    fps = int(RATE_HZ)
    size = args.image_size or (COLOR_IMAGE_SIZE if names[0] in COLOR_TASKS else IMAGE_SIZE)
    robot = SimRobot([(c, c, size, size, fps) for c in CAMERAS])
    rng = np.random.default_rng(args.seed)
    writer = _writer(args.out, robot, layout)
    for name in names:
        done = tried = 0
        while done < counts[name]:
            seed = args.seed + tried + 100_000 * names.index(name)
            tried += 1
            if tried > 3 * counts[name] + 10:
                raise UserError(f"the {name} expert failed too often ({done} of {tried}); this is a bug")
            noisy = bool(rng.random() < args.noise_share)
            record = record_episode(robot, name, seed, noisy, args.noise_scale, layout)
            if record is not None:
                writer.add_episode(record)
                done += 1
        print(f"{name}: {done} episodes ({tried - done} expert failures left out)")
    return _report(writer)


def record_policy(args: argparse.Namespace, names: list[str], counts: dict[str, int], layout) -> int:
    """--policy: every episode is kept (success or not), seeds args.seed.. per task as in `anchorvla eval`."""
    from onboard.config import load_config
    from onboard.devices import build_engine
    from sim.eval import parse_variant, sim_cameras
    from sim.lockstep import SimRobot

    if args.latency_ms < 0:
        raise UserError(f"--latency-ms must be >= 0 (got {args.latency_ms})")
    _, overrides, variant = parse_variant(args.variant)
    config = load_config(args.policy, overrides)
    if config.control.rate_hz != RATE_HZ:
        raise UserError(f"{args.policy}: control.rate_hz must be {RATE_HZ:g}, the rate the experts record at")
    robot = SimRobot(sim_cameras(config))
    writer = _writer(args.out, robot, layout)
    engine = build_engine(config)
    engine.warmup()
    try:
        for name in names:
            successes = 0
            for k in range(counts[name]):
                record, result = record_policy_episode(
                    config, engine, robot, name, args.seed + k, args.latency_ms, variant, layout
                )
                writer.add_episode(record)
                successes += result.success
            print(f"{name}: {counts[name]} episodes driven by the policy ({successes} succeeded)")
    finally:
        engine.close()
    return _report(writer)


def _writer(out: Path, robot, proprio_layout: tuple[str, ...]):
    """A new dataset at `out` for the robot's cameras (a dataset already there is refused, not appended to)."""
    from policy_runtime.dataset import DatasetWriter
    from policy_runtime.types import BASE_CHANNELS, arm_channel

    if (out / "meta/info.json").exists():
        raise UserError(f"--out {out} already holds a dataset; give a new directory (or delete it first)")
    action_layout = [*BASE_CHANNELS, *(arm_channel(j) for j in SO101_JOINTS)]
    cameras = [c.name for c in robot.cameras]
    return DatasetWriter(
        out, RATE_HZ, action_layout, list(proprio_layout), cameras, robot_type="go2_so101_emulated"
    )


def _report(writer) -> int:
    writer.close()
    frames = writer.info["total_frames"]
    print(f"wrote {writer.root}: {len(writer.episodes)} episodes, {frames} frames (LeRobotDataset v3.0)")
    return 0
