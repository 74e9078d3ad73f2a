"""Synthetic RGB cameras for the emulated robot: coarse numpy renderings of the shared `World`.

What is drawn: a checkered ground plane (ray cast per pixel), the task objects as shaded spheres, the Go2's
top plate and the SO-101 (forward kinematics from `kinematics.py`) as chains of spheres ("thick lines"), with a
depth buffer so near things hide far ones. Two views:

- `third_person`: fixed on the Go2 body, on a mast at the right of the body, above the arm, looking down at the workspace ahead of it;
- `wrist`: on the gripper, above the tool centre, looking along the approach direction at the jaws.

A `SyntheticCamera` renders in its own thread at its frame rate and keeps the newest frame, like the RealSense
driver; `stall()` stops new frames (fault injection) while `latest()` keeps the last one with its old time.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from anchorvla.errors import UserError
from drivers import robot_model as kin
from drivers.emulated.world import World
from drivers.types import Frame

VIEWS = ("third_person", "wrist")
SKY = np.array([170, 200, 235], dtype=np.float32)
GROUND = (np.array([120, 120, 110], dtype=np.float32), np.array([160, 160, 150], dtype=np.float32))
GROUND_TILE_M = 0.25
ARM_COLOR = (235, 150, 40)
GRIPPER_COLOR = (60, 60, 60)
BODY_COLOR = (50, 55, 60)
ARM_RADIUS = 0.018  # m, the thickness of the drawn links
NEAR = 0.02  # m


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 with the optical convention: x right, y down, z along the view."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking along `up`: any perpendicular will do
        x = np.cross(z, (1.0, 0.0, 0.0) if abs(z[0]) < 0.9 else (0.0, 1.0, 0.0))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return kin.pose(np.stack([x, y, z], axis=1), eye)


def camera_pose(view: str, joint_positions, base_pose, base_height: float) -> np.ndarray:
    """Camera-to-world pose of a view for the given robot state."""
    root = kin.arm_root_in_world(base_pose, base_height)
    if view == "third_person":
        body = kin.arm_root_in_world(base_pose, base_height, mount_xy=(0.0, 0.0))
        eye = body @ np.array([0.05, -0.45, 0.70, 1.0])
        target = body @ np.array([0.50, 0.0, -base_height, 1.0])
        return look_at(eye[:3], target[:3])
    if view == "wrist":
        g = kin.forward(joint_positions, root).gripper
        eye = g @ np.array(
            [0.0, 0.0, 0.05, 1.0]
        )  # ahead of the wrist link, so the arm does not fill the view
        target = g @ np.array([0.20, 0.0, 0.0, 1.0])
        return look_at(eye[:3], target[:3], up=g[:3, 2])
    raise UserError(f"synthetic camera view '{view}' unknown (use one of {', '.join(VIEWS)})")


def scene_spheres(
    joint_positions, base_pose, base_height: float, objects
) -> list[tuple[np.ndarray, float, tuple]]:
    """Everything drawn besides the ground, as (centre, radius, colour) spheres in the world frame."""
    spheres = []
    body = kin.arm_root_in_world(base_pose, base_height, mount_xy=(0.0, 0.0))
    for bx in np.linspace(-0.30, 0.30, 7):  # the Go2's top plate, 0.7 x 0.3 m
        for by in (-0.09, 0.0, 0.09):
            spheres.append(((body @ np.array([bx, by, -0.05, 1.0]))[:3], 0.06, BODY_COLOR))
    arm = kin.forward(joint_positions, kin.arm_root_in_world(base_pose, base_height))
    points = arm.points()
    for a, b in zip(points[:-1], points[1:], strict=True):
        n = max(1, int(np.linalg.norm(b - a) / (ARM_RADIUS * 0.8)))
        for s in np.linspace(0.0, 1.0, n + 1):
            spheres.append((a + s * (b - a), ARM_RADIUS, ARM_COLOR))
    g = arm.gripper
    opening = (
        0.01 + 0.03 * max(0.0, math.sin(float(joint_positions[5]))) if len(joint_positions) > 5 else 0.02
    )
    for side in (-1.0, 1.0):
        for along in (0.0, 0.02, 0.04):
            spheres.append(((g @ np.array([along, side * opening, 0.0, 1.0]))[:3], 0.008, GRIPPER_COLOR))
    for obj in objects.values():
        spheres.append((np.asarray(obj.position, dtype=np.float64), float(obj.radius), tuple(obj.color)))
    return spheres


class Renderer:
    """A pinhole camera of `fov_deg` horizontal field of view that draws the scene into an HxWx3 uint8 image."""

    def __init__(self, width: int, height: int, fov_deg: float):
        self.width, self.height = width, height
        self.f = (width / 2) / math.tan(math.radians(fov_deg) / 2)
        self.cx, self.cy = (width - 1) / 2, (height - 1) / 2
        u, v = np.meshgrid(np.arange(width), np.arange(height))
        rays = np.stack(
            [(u - self.cx) / self.f, (v - self.cy) / self.f, np.ones_like(u, dtype=np.float64)], -1
        )
        self._rays = rays.reshape(-1, 3).astype(np.float32)  # camera frame, z = 1
        self._u, self._v = u, v
        self._ground_cache: tuple[bytes, np.ndarray, np.ndarray] | None = None

    def _ground(self, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour and depth of the ground (z = 0) and sky behind everything; the last pose's result is reused."""
        key = cam_to_world.tobytes()
        if self._ground_cache is None or self._ground_cache[0] != key:
            self._ground_cache = (key, *self._cast_ground(cam_to_world))
        return self._ground_cache[1].copy(), self._ground_cache[2].copy()

    def _cast_ground(self, cam_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rotation, eye = cam_to_world[:3, :3].astype(np.float32), cam_to_world[:3, 3].astype(np.float32)
        dirs = self._rays @ rotation.T
        hits = (dirs[:, 2] < -1e-6) & (eye[2] > 0)
        t = np.full(len(dirs), np.inf, dtype=np.float32)  # depth along the camera axis (rays have z = 1)
        t[hits] = -eye[2] / dirs[hits, 2]
        xy = eye[:2] + dirs[hits, :2] * t[hits, None]
        parity = (np.floor(xy[:, 0] / GROUND_TILE_M) + np.floor(xy[:, 1] / GROUND_TILE_M)).astype(
            np.int64
        ) % 2
        fade = np.clip(t[hits] / 8.0, 0.0, 1.0)[:, None]  # far ground fades into the sky colour
        colour = np.broadcast_to(SKY, dirs.shape).copy()
        colour[hits] = (1 - fade) * np.where(parity[:, None] == 0, GROUND[0], GROUND[1]) + fade * SKY
        shape = (self.height, self.width)
        return colour.reshape(*shape, 3), t.reshape(shape)

    def render(self, cam_to_world: np.ndarray, spheres) -> np.ndarray:
        image, depth = self._ground(cam_to_world)
        world_to_cam = np.linalg.inv(cam_to_world)
        for centre, radius, colour in spheres:
            x, y, z = (world_to_cam @ np.append(centre, 1.0))[:3]
            if z <= NEAR:
                continue
            u, v, r = self.f * x / z + self.cx, self.f * y / z + self.cy, self.f * radius / z
            u0, u1 = max(0, int(u - r)), min(self.width, int(u + r) + 2)
            v0, v1 = max(0, int(v - r)), min(self.height, int(v + r) + 2)
            if u0 >= u1 or v0 >= v1:
                continue
            du = self._u[v0:v1, u0:u1] - u
            dv = self._v[v0:v1, u0:u1] - v
            d2 = (du * du + dv * dv) / max(r * r, 0.25)
            inside = d2 <= 1.0
            bulge = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
            z_surface = z - radius * bulge
            visible = inside & (z_surface < depth[v0:v1, u0:u1])
            shade = (0.55 + 0.45 * bulge)[..., None] * np.asarray(colour, dtype=np.float32)
            image[v0:v1, u0:u1][visible] = shade[visible]
            depth[v0:v1, u0:u1][visible] = z_surface[visible]
        return np.clip(image, 0, 255).astype(np.uint8)


class SyntheticCamera:
    """A `drivers.protocols.Camera` rendering `view` of `world` at `fps` in a thread."""

    def __init__(
        self, name: str, world: World, view: str, width: int = 224, height: int = 224, fps: int = 30
    ):
        if view not in VIEWS:
            raise UserError(
                f"camera '{name}': synthetic view '{view}' unknown (set robot.cameras[].view to one of {', '.join(VIEWS)})"
            )
        self.name, self.world, self.view = name, world, view
        self.period_ns = round(1e9 / fps)
        self.renderer = Renderer(width, height, fov_deg=70.0 if view == "third_person" else 85.0)
        self._latest: Frame | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stalled = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    def render_now(self) -> Frame:
        """Render the world as it is now (also what the thread does once a period)."""
        t_ns = time.monotonic_ns()
        joints, base_pose, objects = self.world.snapshot()
        height = self.world.base_height
        image = self.renderer.render(
            camera_pose(self.view, joints, base_pose, height),
            scene_spheres(joints, base_pose, height, objects),
        )
        frame = Frame(t_ns, self.name, image, self._seq)
        self._seq += 1
        return frame

    def start(self) -> None:
        self._stop.clear()
        with self._lock:
            self._latest = self.render_now()
        self._thread = threading.Thread(target=self._run, name=f"synthetic-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_ns = time.monotonic_ns() + self.period_ns
        while not self._stop.wait(max(0.0, (next_ns - time.monotonic_ns()) / 1e9)):
            next_ns += self.period_ns
            if self._stalled.is_set():
                continue
            frame = self.render_now()
            with self._lock:
                self._latest = frame

    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def stall(self) -> None:
        """Fault injection: no new frames until `resume()`."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
