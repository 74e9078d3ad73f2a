"""The emulated robot's task inside the controller: the goal the policy is given and the task's outcome.

`GoalEngine` wraps a policy engine so every observation carries the task's goal pose (on the robot a perception
module would supply it; here the simulator's task does), or none in a task without a privileged goal (the colour
tasks), where a policy whose proprio reads goal.* channels is refused. `TaskMonitor` listens to the fast loop's ticks: it runs
the task's grasp logic on the shared world, and stops the controller when the task succeeds, fails or runs out of
time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from anchorvla.errors import UserError
from drivers.emulated.world import World
from policy_runtime.engines.base import PolicyEngine
from policy_runtime.types import ActionChunk, Observation
from sim.tasks import Task, TaskStatus

log = logging.getLogger("anchorvla")


def proprio_channels(engine: PolicyEngine) -> tuple[str, ...]:
    """The proprio layout an engine reads: a bundle's spec or a checkpoint's config (() when it says none)."""
    for holder in (getattr(getattr(engine, "inputs", None), "spec", None), getattr(engine, "config", None)):
        layout = getattr(holder, "proprio_layout", None)
        if layout is not None:
            return tuple(layout)
    return ()


class GoalEngine:
    """A `PolicyEngine` that adds `goal()` (x, y, z in the arm base frame, or None) to each observation it passes
    on."""

    def __init__(self, engine: PolicyEngine, goal: Callable[[], np.ndarray | None]):
        self.engine, self.goal = engine, goal
        self.channels, self.dt_ns = engine.channels, engine.dt_ns

    @classmethod
    def for_task(cls, engine: PolicyEngine, task: Task, world: World) -> GoalEngine:
        """The goal of `task` on `world`, or None when the task gives none (refused if the policy reads one)."""
        if task.goal_in_proprio:
            return cls(engine, lambda: task.goal_in_arm_frame(world))
        wanted = [c for c in proprio_channels(engine) if c.startswith("goal.")]
        if wanted:
            raise UserError(
                f"task '{task.name}' gives the policy no goal position, but its proprio reads "
                f"{', '.join(wanted)}: run a policy trained without goal.* channels (`sim record --task color`)"
            )
        return cls(engine, lambda: None)

    def warmup(self) -> None:
        self.engine.warmup()

    def infer(self, obs: Observation) -> ActionChunk:
        return self.engine.infer(dataclasses.replace(obs, goal=self.goal()))

    def residual(
        self, obs: Observation, chunk: ActionChunk, j: int, planned: np.ndarray
    ) -> np.ndarray | None:
        return self.engine.residual(dataclasses.replace(obs, goal=self.goal()), chunk, j, planned)

    def close(self) -> None:
        self.engine.close()


class TaskMonitor:
    """Fast-loop tick listener: task bookkeeping on the world, and `stop(reason)` when the episode is over."""

    def __init__(self, task: Task, world: World, stop: Callable[[str], None]):
        self.task, self.world, self.stop = task, world, stop
        self.ticks = 0
        self.status: TaskStatus | None = None
        self.success_tick: int | None = None

    def __call__(self, tick_ns: int) -> None:
        self.ticks += 1
        self.task.update(self.world)
        self.status = self.task.status(self.world)
        if self.status.success and self.success_tick is None:
            self.success_tick = self.ticks
            self.stop("task_success")
        elif self.status.failed:
            self.stop("task_failed")
        elif self.ticks >= self.task.max_steps:
            self.stop("task_timeout")

    def result(self, rate_hz: float) -> dict:
        status = self.status or self.task.status(self.world)
        return {
            "task": self.task.name,
            "instruction": self.task.instruction,
            "success": bool(self.success_tick is not None),
            "time_to_success_s": None if self.success_tick is None else round(self.success_tick / rate_hz, 3),
            "detail": status.detail,
        }


def needs_world(config) -> bool:
    """Whether the config names an emulated device, which all share one World."""
    robot = config.robot
    return (
        robot.arm.driver == "emulated"
        or robot.base.driver == "emulated"
        or any(cam.driver == "synthetic" for cam in robot.cameras)
    )


class SimSession:
    """`sim.task` of a config in `anchorvla run`: places the task, gives the engine its goal, watches the outcome."""

    def __init__(self, config, world: World):
        from sim.tasks import start_task

        self.config, self.world = config, world
        self.task = start_task(config.sim.task, world, config.sim.seed)
        self.monitor: TaskMonitor | None = None

    def wrap(self, engine: PolicyEngine) -> GoalEngine:
        return GoalEngine.for_task(engine, self.task, self.world)

    def attach(self, runtime) -> None:
        """Watch `runtime`'s ticks; the task's end stops it. The instruction is the task's."""
        self.monitor = TaskMonitor(self.task, self.world, runtime.stop)
        runtime.fast.tick_listeners.append(self.monitor)
        runtime.fast.instruction = runtime.slow.instruction = self.task.instruction

    def result(self) -> dict:
        assert self.monitor is not None
        return self.monitor.result(self.config.control.rate_hz)
