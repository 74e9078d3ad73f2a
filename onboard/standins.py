"""In-memory stand-ins for the arm, base, cameras and policy engine.

They let the runtime run end to end without hardware or a trained policy (bring-up, tests). They are not
emulators of the real protocols (those live in `drivers/emulated/`): they implement the driver protocols
directly, in memory.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from anchorvla.errors import DeviceError
from drivers.types import ArmState, BaseState, Frame
from policy_runtime.types import BASE_CHANNELS, ActionChunk, Observation, arm_channel


class StandinArm:
    """Joints follow their goals with a first-order lag; can be told to stop answering."""

    def __init__(self, joint_names: tuple[str, ...], time_constant_s: float = 0.05):
        self.joint_names = tuple(joint_names)
        self._pos = np.zeros(len(joint_names))
        self._goal = np.zeros(len(joint_names))
        self._vel = np.zeros(len(joint_names))
        self._tau = time_constant_s
        self._t = time.monotonic_ns()
        self.silent = False  # fault injection: stop answering
        self.goals_written: list[np.ndarray] = []
        self.torque_enabled = True

    def start(self) -> None:
        self._t = time.monotonic_ns()

    def _advance(self) -> None:
        now = time.monotonic_ns()
        dt = (now - self._t) / 1e9
        self._t = now
        alpha = 1.0 - math.exp(-dt / self._tau) if dt > 0 else 0.0
        new = self._pos + alpha * (self._goal - self._pos)
        self._vel = (new - self._pos) / dt if dt > 0 else self._vel
        self._pos = new

    def read_state(self) -> ArmState:
        if self.silent:
            raise DeviceError("stand-in arm: no status packet")
        self._advance()
        return ArmState(self._t, self.joint_names, self._pos.copy(), self._vel.copy())

    def write_goal(self, positions: np.ndarray) -> None:
        if self.silent:
            raise DeviceError("stand-in arm: no status packet")
        self._goal = np.asarray(positions, dtype=np.float64).copy()
        self.goals_written.append(self._goal)

    def release_torque(self) -> None:
        """Torque off (the park-and-release sequence's last step); the stand-in stays where it is."""
        if self.silent:
            raise DeviceError("stand-in arm: no status packet")
        self._advance()
        self._goal = self._pos.copy()
        self.torque_enabled = False

    def stop(self) -> None:
        pass


class StandinBase:
    """Integrates body-frame velocity commands into a planar pose."""

    def __init__(self) -> None:
        self._xy = np.zeros(2)
        self._yaw = 0.0
        self._v = np.zeros(3)
        self._t = time.monotonic_ns()
        self.moves: list[tuple[float, float, float]] = []
        self.stop_moves = 0
        self.damps = 0

    def start(self) -> None:
        self._t = time.monotonic_ns()

    def _advance(self) -> None:
        now = time.monotonic_ns()
        dt = (now - self._t) / 1e9
        self._t = now
        c, s = math.cos(self._yaw), math.sin(self._yaw)
        self._xy += dt * np.array([c * self._v[0] - s * self._v[1], s * self._v[0] + c * self._v[1]])
        self._yaw += dt * self._v[2]

    def read_state(self) -> BaseState:
        self._advance()
        return BaseState(
            self._t,
            np.array([*self._xy, 0.3]),
            self._yaw,
            np.array([self._v[0], self._v[1], 0.0]),
            self._v[2],
        )

    def move(self, vx: float, vy: float, wz: float) -> None:
        self._advance()
        self._v = np.array([vx, vy, wz], dtype=np.float64)
        self.moves.append((vx, vy, wz))

    def stop_move(self) -> None:
        self._advance()
        self._v = np.zeros(3)
        self.stop_moves += 1

    def damp(self) -> None:
        """Emergency: joints go limp (the Go2's Damp); the stand-in just stops."""
        self._advance()
        self._v = np.zeros(3)
        self.damps += 1

    def stop(self) -> None:
        pass


class StandinCamera:
    """A camera whose newest frame is a small gradient image stamped at the frame grid of `fps`.

    Fault injection: `stalled_at_ns` (no new frames after then: `latest()` keeps the last one), `unplugged`
    (`latest()` raises, as a driver whose device went away), `blank` (`latest()` gives None: no frame yet)."""

    def __init__(self, name: str, width: int = 64, height: int = 64, fps: int = 30):
        self.name = name
        self._shape = (height, width, 3)
        self._period_ns = int(1e9 / fps)
        self._t0 = time.monotonic_ns()
        self.stalled_at_ns: int | None = None
        self.unplugged = False
        self.blank = False

    def start(self) -> None:
        self._t0 = time.monotonic_ns()

    def latest(self) -> Frame | None:
        if self.unplugged:
            raise DeviceError(f"stand-in camera {self.name}: device gone")
        if self.blank:
            return None
        now = time.monotonic_ns() if self.stalled_at_ns is None else self.stalled_at_ns
        seq = (now - self._t0) // self._period_ns
        image = np.full(self._shape, seq % 256, dtype=np.uint8)
        return Frame(self._t0 + seq * self._period_ns, self.name, image, int(seq))

    def stop(self) -> None:
        pass


class StandinEngine:
    """A policy stand-in: smooth sine joint targets and a gentle forward base motion.

    `compute_ms` is spent in a GIL-releasing sleep or burning a core with numpy (`compute`); every `fail_every`-th call
    raises and every `nan_every`-th call returns NaN, for fault tests.
    """

    def __init__(
        self,
        joint_names: tuple[str, ...],
        dt_ns: int,
        compute_ms: float = 100.0,
        compute: str = "sleep",
        chunk_length: int = 10,
        amplitude: float = 0.3,
        period_s: float = 4.0,
        base_speed: float = 0.2,
        fail_every: int = 0,
        nan_every: int = 0,
    ):
        self.joint_names = tuple(joint_names)
        self.channels = BASE_CHANNELS + tuple(arm_channel(j) for j in joint_names)
        self.dt_ns = dt_ns
        self.compute_s = compute_ms / 1000.0
        self.compute = compute
        self.chunk_length = chunk_length
        self.amplitude = amplitude
        self.omega = 2 * math.pi / period_s
        self.base_speed = base_speed
        self.fail_every = fail_every
        self.nan_every = nan_every
        self.calls = 0
        self._lock = threading.Lock()

    def warmup(self) -> None:
        pass

    def trajectory(self, t_s: np.ndarray) -> np.ndarray:
        """The reference the stand-in follows: (len(t), 3 + joints)."""
        phases = np.arange(len(self.joint_names)) * 0.7
        centres = np.array(
            [0.5 if j == "gripper" else 0.0 for j in self.joint_names]
        )  # gripper range is -0.17..1.75
        arm = centres + self.amplitude * np.sin(self.omega * t_s[:, None] + phases[None, :])
        vx = self.base_speed * (0.5 + 0.5 * np.sin(0.5 * self.omega * t_s))
        base = np.stack([vx, np.zeros_like(t_s), 0.2 * np.sin(0.25 * self.omega * t_s)], axis=1)
        return np.concatenate([base, arm], axis=1)

    def _spend(self, seconds: float) -> None:
        if self.compute == "sleep":
            time.sleep(seconds)
            return
        end = time.monotonic() + seconds
        a = np.full((256, 256), 1e-3)
        while time.monotonic() < end:
            a = a @ a  # BLAS releases the GIL while it runs, as ONNX Runtime and torch kernels do
            a.fill(1e-3)

    def infer(self, obs: Observation) -> ActionChunk:
        with self._lock:
            self.calls += 1
            call = self.calls
        if self.compute_s:
            self._spend(self.compute_s)
        if self.fail_every and call % self.fail_every == 0:
            raise RuntimeError(f"stand-in engine: injected failure on call {call}")
        t = (obs.t_ns + np.arange(self.chunk_length) * self.dt_ns) / 1e9
        actions = self.trajectory(t)
        if self.nan_every and call % self.nan_every == 0:
            actions[:, :] = np.nan
        return ActionChunk(obs.t_ns, self.dt_ns, self.channels, actions)

    def residual(
        self, obs: Observation, chunk: ActionChunk, j: int, planned: np.ndarray
    ) -> np.ndarray | None:
        return None

    def close(self) -> None:
        pass
