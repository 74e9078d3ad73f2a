"""A small synthetic multimodal task: reach a goal past a round obstacle that can be passed on either side.

A point robot on a plane starts near (-1, 0) and must reach a goal near (1, 0); a disk of radius 0.35 sits at the
origin between them. Each demonstration picks the left or the right route at random (50/50, independent of the
start), so the start state alone never says which route: averaging the two routes drives straight into the
obstacle. Proprio = [x, y, goal_x, goal_y] (m); action = planar velocity [vx, vy] (m/s) at dt = 0.1 s.
Numpy only: the ablation benchmark and the demo dataset writer both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DT_S = 0.1
SPEED = 1.0  # m/s along the route
OBSTACLE_RADIUS = 0.3
WAYPOINT_Y = 0.7  # the route passes (0, +-0.7)
SPLIT_X = -0.6  # where the two routes part
PROPRIO_LAYOUT = ("pos.x", "pos.y", "goal.x", "goal.y")
ACTION_LAYOUT = ("base.vx", "base.vy")


@dataclass(frozen=True)
class Episode:
    states: np.ndarray  # (T, 4) proprio per frame
    actions: np.ndarray  # (T, 2) velocity per frame
    side: int  # +1 left (y > 0), -1 right


def route_actions(start: np.ndarray, goal: np.ndarray, side: int) -> np.ndarray:
    """Velocities that follow start -> (SPLIT_X, start y) -> (0, side*0.7) -> goal at constant speed."""
    start = np.asarray(start, float)
    points = [
        start,
        np.array([SPLIT_X, start[1]]),
        np.array([0.0, side * WAYPOINT_Y]),
        np.asarray(goal, float),
    ]
    actions = []
    pos = points[0].copy()
    for target in points[1:]:
        while True:
            delta = target - pos
            dist = float(np.linalg.norm(delta))
            if dist < 1e-9:
                break
            step = min(SPEED * DT_S, dist)
            vel = delta / dist * step / DT_S
            actions.append(vel)
            pos = pos + vel * DT_S
    return np.asarray(actions)


def make_episode(rng: np.random.Generator, side: int | None = None) -> Episode:
    start = np.array([rng.uniform(-1.1, -0.9), rng.uniform(-0.15, 0.15)])
    goal = np.array([rng.uniform(0.9, 1.1), rng.uniform(-0.15, 0.15)])
    side = int(rng.choice([-1, 1])) if side is None else side
    return episode_for(start, goal, side)


def episode_for(start: np.ndarray, goal: np.ndarray, side: int) -> Episode:
    actions = route_actions(start, goal, side)
    positions = start + np.concatenate([np.zeros((1, 2)), np.cumsum(actions * DT_S, axis=0)[:-1]])
    states = np.concatenate([positions, np.broadcast_to(goal, positions.shape)], axis=1)
    return Episode(states=states, actions=actions, side=side)


def make_episodes(count: int, seed: int) -> list[Episode]:
    """`count` episodes: count/2 random start/goal pairs, each demonstrated by both routes."""
    rng = np.random.default_rng(seed)
    episodes = []
    while len(episodes) < count:
        first = make_episode(rng)
        episodes += [first, episode_for(first.states[0, :2], first.states[0, 2:], -first.side)]
    return episodes[:count]


def chunk_at(actions: np.ndarray, k: int, horizon: int) -> np.ndarray:
    """Actions k..k+H-1 of an episode, padded with zero velocity (stopped at the goal) past its end."""
    chunk = np.zeros((horizon, actions.shape[1]))
    part = actions[k : k + horizon]
    chunk[: len(part)] = part
    return chunk


def trace(start_xy: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Positions after each action of a chunk executed open loop: (..., H, 2)."""
    return start_xy[..., None, :] + np.cumsum(actions * DT_S, axis=-2)


def clear_of_obstacle(start_xy: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """True where every position the chunk passes through stays outside the obstacle. (N, 2), (N, H, 2) -> (N,)."""
    positions = np.concatenate([start_xy[:, None], trace(start_xy, actions)], axis=1)
    # Check the segments densely, not only the step ends.
    fine = (
        positions[:, :-1, None]
        + (positions[:, 1:, None] - positions[:, :-1, None]) * np.linspace(0, 1, 5)[:, None]
    )
    return np.linalg.norm(fine, axis=-1).min(axis=(1, 2)) > OBSTACLE_RADIUS


def error_to_nearest_demo(states: np.ndarray, actions: np.ndarray, horizon: int) -> np.ndarray:
    """Mean position error (m) of each chunk's trace to the nearer of the two demonstrated routes from its state."""
    errors = []
    for state, chunk in zip(states, actions, strict=True):
        start, goal = state[:2], state[2:]
        best = np.inf
        for side in (-1, 1):
            demo = chunk_at(route_actions(start, goal, side), 0, horizon)
            best = min(best, float(np.linalg.norm(trace(start, chunk) - trace(start, demo), axis=-1).mean()))
        errors.append(best)
    return np.asarray(errors)


TASKS = {"reach the goal": None, "pass the obstacle on the left": 1, "pass the obstacle on the right": -1}


def render(
    state: np.ndarray, size: int = 32, centre: tuple[float, float] = (0.0, 0.0), half_width: float = 1.3
) -> np.ndarray:
    """A top-down RGB view: grey obstacle, green goal, red robot. (size, size, 3) uint8."""
    coords = (np.arange(size) + 0.5) / size * 2 * half_width - half_width
    xs = coords[None, :] + centre[0]
    ys = -coords[:, None] + centre[1]
    image = np.full((size, size, 3), 255, np.uint8)
    image[np.hypot(xs, ys) < OBSTACLE_RADIUS] = (128, 128, 128)
    image[np.hypot(xs - state[2], ys - state[3]) < 0.12] = (0, 180, 0)
    image[np.hypot(xs - state[0], ys - state[1]) < 0.1] = (220, 0, 0)
    return image


def write_demo_dataset(root, episodes: int = 40, seed: int = 0, image_size: int = 32):
    """A small recorded dataset of this task (a LeRobotDataset): two cameras (a fixed top-down view and a
    view that follows the robot), three instructions (either route, left only, right only)."""
    from policy_runtime.dataset import EpisodeRecord, write_dataset

    rng = np.random.default_rng(seed)
    names = list(TASKS)
    records = []
    for e in range(episodes):
        task = names[e % len(names)]
        ep = make_episode(rng, TASKS[task])
        front = np.stack([render(s, image_size) for s in ep.states])
        follow = np.stack([render(s, image_size, centre=(s[0], s[1]), half_width=0.8) for s in ep.states])
        records.append(EpisodeRecord(ep.states, ep.actions, task, {"front": front, "follow": follow}))
    return write_dataset(
        root, records, 1 / DT_S, list(ACTION_LAYOUT), list(PROPRIO_LAYOUT), robot_type="obstacle_task_point"
    )


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m tools.obstacle_task DATASET_DIR   (writes the demo dataset)")
    print(f"wrote {write_demo_dataset(sys.argv[1])}")
