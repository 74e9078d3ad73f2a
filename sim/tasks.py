"""Tasks of the emulated mobile manipulator: where the objects go, what counts as success, grasping.

Three tasks, each placing its objects in the shared `World` from a seeded generator:

- `touch`: a green marker on a post 1.0-1.6 m ahead; drive to it and touch it with the gripper.
- `reach`: a red ball within the arm's reach behind a blue obstacle in line with the gripper; reach the ball
  going around the obstacle on either side (both are right: the demonstrations use both). Touching the
  obstacle fails the episode.
- `lift`: a yellow ball within reach; close the gripper on it and lift it 6 cm.

Each has a colour variant without a privileged goal (`touch_color`, `reach_color`, `lift_color`; `--task color`
names the three): two targets, one red and one blue, are in the scene, the instruction names the one to go to
("touch the red marker"), and the goal's position is not in the proprio (`Task.goal_in_proprio` is False): the
policy must find it in the images. From the start pose at 96 px, the markers (0.04 m, bigger than the plain
task's) cover about 10-50 pixels in each camera, the balls (0.025 m) 6-14 in the third-person one (the wrist camera
looks over them until the arm reaches down); in reach each ball has its own white obstacle above it,
so the obstacle does not tell which ball is the target. `Task.name_other()` makes the instruction name the
distractor instead (eval's `instruction=other`, the language check).

Grasping: an object attaches to the gripper when the gripper closes (crosses `GRIPPER_CLOSED` from above)
with the tool centre within the object's radius + `GRASP_MARGIN`; a held object follows the tool centre and
drops back where it is when the gripper opens past `GRIPPER_RELEASED`.

Every position here is in the world frame unless a name says "arm" (the arm base frame, see kinematics.py).
`Task.goal_in_arm_frame` is the target pose the policy's proprio carries in the plain tasks (FACTS.md: the paper's
proprio has the target object/goal pose), and what the experts read in every task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anchorvla.errors import UserError
from drivers import robot_model as kin
from drivers.emulated.world import World, WorldObject

GRIPPER_OPEN = 0.8  # rad: the open jaws the experts use (the emulator's default calibration allows <= 0.96)
GRIPPER_CLOSED = 0.2  # rad: at or below this the jaws are closed
GRIPPER_RELEASED = 0.5  # rad: a held object drops once the jaws open past this
GRASP_MARGIN = 0.02  # m beyond the object's radius within which closing jaws catch it
TOUCH_TOLERANCE = 0.025  # m from an object's surface that counts as touching
LIFT_HEIGHT = 0.06  # m above where it started
ARM_HEIGHT_Z = 0.30  # world z of the arm's plate (World.base_height)
COLORS = {"red": (220, 40, 40), "blue": (50, 80, 220)}  # the colour tasks' two targets
OBSTACLE_WHITE = (235, 235, 235)


def tool_point(world_joints: np.ndarray, base_pose: np.ndarray, base_height: float) -> np.ndarray:
    """The gripper's tool centre in the world frame."""
    root = kin.arm_root_in_world(base_pose, base_height)
    return kin.forward(world_joints, root).gripper[:3, 3]


def world_to_arm(point: np.ndarray, base_pose: np.ndarray, base_height: float) -> np.ndarray:
    """A world point in the arm base frame."""
    root = kin.arm_root_in_world(base_pose, base_height)
    return (np.linalg.inv(root) @ np.append(point, 1.0))[:3]


@dataclass(frozen=True)
class TaskStatus:
    success: bool
    failed: bool  # ended without success (e.g. touched the obstacle)
    detail: str


@dataclass
class Task:
    """The episode's state: which object is the goal and what has happened to it."""

    name: str
    instruction: str
    max_steps: int  # control ticks (15 Hz) before an episode counts as failed
    goal: str  # the target object (its pose is the proprio's goal.* in the plain tasks)
    start_goal_position: np.ndarray = field(default_factory=lambda: np.zeros(3))
    obstacles: tuple[str, ...] = ()  # touching one fails the episode
    side: float = 1.0  # reach: the side (+1 left, -1 right) the expert goes around on
    kind: str = ""  # touch | reach | lift: what success means and what the expert does ("" = name)
    goal_in_proprio: bool = True  # False: the policy is not told where the goal is (the colour tasks)
    distractor: str | None = None  # the other target of a colour task
    colors: dict[str, str] = field(default_factory=dict)  # target object -> colour name
    template: str = ""  # the colour task's instruction with {} for the colour
    companions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # objects that move with a target
    _gripper_before: float = 1.0
    _failed: str | None = None  # the obstacle touched

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    # -- episode -----------------------------------------------------------------------------------------
    def name_other(self, world: World) -> None:
        """Make the instruction name the distractor: it becomes the goal (the reach expert's side with it)."""
        if self.distractor is None:
            raise UserError(f"task '{self.name}' has no second target to name (use a colour task)")
        self.goal, self.distractor = self.distractor, self.goal
        self.instruction = self.template.format(self.colors[self.goal])
        with world.lock:
            self.start_goal_position = world.objects[self.goal].position.copy()
            if self.kind == "reach":
                self.side = _away_from(world.objects[self.goal], world.objects[self.distractor], world)

    def nudge(self, world: World, offset: np.ndarray) -> bool:
        """Move the goal object (and what moves with it) by `offset` (world frame, m), unless it is held."""
        with world.lock:
            if world.objects[self.goal].held:
                return False
            for name in (self.goal, *self.companions.get(self.goal, ())):
                world.objects[name].position += offset
            self.start_goal_position = self.start_goal_position + offset
        return True

    def goal_in_arm_frame(self, world: World) -> np.ndarray:
        """(x, y, z) of the goal object in the arm base frame, m."""
        with world.lock:
            return world_to_arm(world.objects[self.goal].position, world.base_pose, world.base_height)

    def update(self, world: World) -> None:
        """After the world moved: grasp logic, held objects follow the gripper, failure checks."""
        with world.lock:
            joints = world.joint_positions.copy()
            tip = tool_point(joints, world.base_pose, world.base_height)
            gripper = float(joints[world.joint_names.index("gripper")])
            for obj in world.objects.values():
                if obj.held and gripper > GRIPPER_RELEASED:
                    obj.held = False
                if obj.held:
                    obj.position[:] = tip
            closing = self._gripper_before > GRIPPER_CLOSED >= gripper
            if closing:
                for obj in world.objects.values():
                    if not obj.held and np.linalg.norm(obj.position - tip) <= obj.radius + GRASP_MARGIN:
                        obj.held = True
                        obj.position[:] = tip
            self._gripper_before = gripper
            for name in self.obstacles:
                obstacle = world.objects[name]
                if np.linalg.norm(obstacle.position - tip) <= obstacle.radius + TOUCH_TOLERANCE / 2:
                    self._failed = name

    def status(self, world: World) -> TaskStatus:
        with world.lock:
            tip = tool_point(world.joint_positions, world.base_pose, world.base_height)
            goal = world.objects[self.goal]
            distance = float(np.linalg.norm(goal.position - tip) - goal.radius)
            if self._failed:
                return TaskStatus(False, True, f"touched the {self._failed}")
            if self.kind == "lift":
                rise = float(goal.position[2] - self.start_goal_position[2])
                ok = goal.held and rise >= LIFT_HEIGHT
                return TaskStatus(ok, False, f"held={goal.held} lifted {rise * 100:.1f} cm")
            ok = distance <= TOUCH_TOLERANCE
            return TaskStatus(ok, False, f"gripper {distance * 100:.1f} cm from the {self.goal}")


def _arm_point_to_world(arm_xyz, base_pose: np.ndarray, base_height: float) -> np.ndarray:
    root = kin.arm_root_in_world(base_pose, base_height)
    return (root @ np.append(np.asarray(arm_xyz, dtype=np.float64), 1.0))[:3]


def _reset_world(world: World) -> None:
    """The robot at the origin, arm joints untouched (the servos stay where they are), no objects."""
    with world.lock:
        world.base_pose[:] = 0.0
        world.objects.clear()


def _place_touch(world: World, rng: np.random.Generator) -> Task:
    distance = rng.uniform(1.0, 1.6)
    bearing = rng.uniform(-0.35, 0.35)
    position = np.array(
        [distance * np.cos(bearing), distance * np.sin(bearing), ARM_HEIGHT_Z + rng.uniform(0.0, 0.05)]
    )
    with world.lock:
        world.objects["marker"] = WorldObject("marker", position, 0.03, (40, 200, 60))
    return Task("touch", "drive to the green marker and touch it", 300, "marker", position.copy())


def _place_reach(world: World, rng: np.random.Generator) -> Task:
    ball_arm = np.array([rng.uniform(0.27, 0.33), rng.uniform(-0.06, 0.06), rng.uniform(0.0, 0.03)])
    # The obstacle sits between the gripper's start (0.30, 0, 0.18) and the ball, a little above the ball.
    obstacle_arm = ball_arm + np.array([0.0, 0.0, 0.06])
    with world.lock:
        base, height = world.base_pose.copy(), world.base_height
        ball = _arm_point_to_world(ball_arm, base, height)
        world.objects["ball"] = WorldObject("ball", ball, 0.025, (220, 40, 40))
        world.objects["obstacle"] = WorldObject(
            "obstacle", _arm_point_to_world(obstacle_arm, base, height), 0.025, (50, 80, 220)
        )
    task = Task(
        "reach", "reach the red ball around the blue one", 150, "ball", ball.copy(), ("obstacle",),
        companions={"ball": ("obstacle",)},
    )  # fmt: skip
    task.side = float(rng.choice([-1.0, 1.0]))
    return task


def _place_lift(world: World, rng: np.random.Generator) -> Task:
    ball_arm = np.array([rng.uniform(0.30, 0.35), rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.04)])
    with world.lock:
        ball = _arm_point_to_world(ball_arm, world.base_pose, world.base_height)
        world.objects["ball"] = WorldObject("ball", ball, 0.02, (230, 200, 30))
    return Task("lift", "pick up the yellow ball and lift it", 180, "ball", ball.copy())


def _away_from(target: WorldObject, other: WorldObject, world: World) -> float:
    """The side (+1 left, -1 right, in the arm frame) of `target` facing away from `other`."""
    lateral = world_to_arm(target.position, world.base_pose, world.base_height)[1]
    return 1.0 if lateral >= world_to_arm(other.position, world.base_pose, world.base_height)[1] else -1.0


def _colour_task(kind: str, template: str, max_steps: int, targets: dict[str, str], rng, world: World, **kw):
    """A colour task over `targets` (object -> colour name): the target drawn from `rng`, the other the
    distractor."""
    goal, distractor = list(targets) if rng.random() < 0.5 else list(targets)[::-1]
    with world.lock:
        start = world.objects[goal].position.copy()
    return Task(
        f"{kind}_color", template.format(targets[goal]), max_steps, goal, start, kind=kind, goal_in_proprio=False,
        distractor=distractor, colors=targets, template=template, **kw,
    )  # fmt: skip


def _lateral_pair(
    rng: np.random.Generator, half_gap: tuple[float, float], span: float
) -> tuple[float, float]:
    """Two lateral offsets, one each side of a centre drawn within +-`span`, `half_gap` apart from it."""
    centre = rng.uniform(-span, span)
    return centre + rng.uniform(*half_gap), centre - rng.uniform(*half_gap)


def _place_touch_color(world: World, rng: np.random.Generator) -> Task:
    left, right = _lateral_pair(rng, (0.16, 0.24), 0.12)  # bearings, rad
    with world.lock:
        for name, bearing, colour in (("marker_a", left, "red"), ("marker_b", right, "blue")):
            distance = rng.uniform(1.0, 1.45)
            position = np.array([distance * np.cos(bearing), distance * np.sin(bearing), ARM_HEIGHT_Z + 0.02])
            world.objects[name] = WorldObject(name, position, 0.04, COLORS[colour])
    targets = {"marker_a": "red", "marker_b": "blue"}
    return _colour_task("touch", "drive to the {} marker and touch it", 300, targets, rng, world)


def _place_reach_color(world: World, rng: np.random.Generator) -> Task:
    left, right = _lateral_pair(rng, (0.07, 0.09), 0.02)  # m, arm frame
    targets, companions = {}, {}
    with world.lock:
        base, height = world.base_pose.copy(), world.base_height
        for suffix, lateral, colour in (("a", left, "red"), ("b", right, "blue")):
            ball_arm = np.array([rng.uniform(0.27, 0.32), lateral, rng.uniform(0.0, 0.03)])
            ball, obstacle = f"ball_{suffix}", f"obstacle_{suffix}"
            world.objects[ball] = WorldObject(
                ball, _arm_point_to_world(ball_arm, base, height), 0.025, COLORS[colour]
            )
            world.objects[obstacle] = WorldObject(
                obstacle,
                _arm_point_to_world(ball_arm + (0.0, 0.0, 0.06), base, height),
                0.025,
                OBSTACLE_WHITE,
            )
            targets[ball], companions[ball] = colour, (obstacle,)
    task = _colour_task(
        "reach", "reach the {} ball around the white one above it", 150, targets, rng, world,
        obstacles=("obstacle_a", "obstacle_b"), companions=companions,
    )  # fmt: skip
    task.side = _away_from(world.objects[task.goal], world.objects[task.distractor], world)
    return task


def _place_lift_color(world: World, rng: np.random.Generator) -> Task:
    left, right = _lateral_pair(rng, (0.06, 0.08), 0.03)  # m, arm frame
    with world.lock:
        for name, lateral, colour in (("ball_a", left, "red"), ("ball_b", right, "blue")):
            ball_arm = np.array([rng.uniform(0.30, 0.35), lateral, rng.uniform(0.0, 0.04)])
            position = _arm_point_to_world(ball_arm, world.base_pose, world.base_height)
            world.objects[name] = WorldObject(name, position, 0.025, COLORS[colour])
    targets = {"ball_a": "red", "ball_b": "blue"}
    return _colour_task("lift", "pick up the {} ball and lift it", 180, targets, rng, world)


PLACERS = {
    "touch": _place_touch, "reach": _place_reach, "lift": _place_lift,
    "touch_color": _place_touch_color, "reach_color": _place_reach_color, "lift_color": _place_lift_color,
}  # fmt: skip
TASKS = ("touch", "reach", "lift")  # `--task all`: the plain tasks, the goal in the proprio
COLOR_TASKS = ("touch_color", "reach_color", "lift_color")  # `--task color`: no goal in the proprio


def start_task(name: str, world: World, seed: int) -> Task:
    """Clear the world and place task `name`'s objects from `seed`; the arm keeps its pose."""
    if name not in PLACERS:
        raise UserError(f"task '{name}' unknown (use one of {', '.join(PLACERS)})")
    _reset_world(world)
    task = PLACERS[name](world, np.random.default_rng(seed))
    with world.lock:
        task._gripper_before = float(world.joint_positions[world.joint_names.index("gripper")])
    return task


def task_names(spec: str) -> list[str]:
    """`--task` as task names: one, a comma-separated list, 'all' (the plain tasks) or 'color' (their colour
    variants)."""
    groups = {"all": TASKS, "color": COLOR_TASKS}
    names = list(groups[spec]) if spec in groups else [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [n for n in names if n not in PLACERS]
    if not names or unknown:
        raise UserError(
            f"--task {spec!r}: use one of {', '.join(PLACERS)}, 'all', 'color' or a comma-separated list"
        )
    return names
