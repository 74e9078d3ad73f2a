"""The emulated Go2's body, without any DDS: the sport-mode state machine, velocity tracking with
acceleration limits and the vendor's speed limits, the ~1 s hold of the last Move, and the pose.

Time is passed in explicitly (`now_s`, monotonic seconds), so the model is deterministic under test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drivers.unitree import sport_api as api
from drivers.unitree.sport_client import clamp_move

STANDING_HEIGHT_M = 0.32
LYING_HEIGHT_M = 0.08

# Emulator-only status code for a request the current mode refuses (the vendor's code for this case is not
# documented): e.g. BalanceStand while lying down, Move while the joints are locked.
ERR_REFUSED = 4001


@dataclass
class BodyLimits:
    accel: tuple[float, float, float] = (2.0, 1.5, 6.0)  # |dv/dt| for vx, vy (m/s^2), vyaw (rad/s^2)
    move_hold_s: float = api.MOVE_HOLD_S
    transition_s: float = 1.0  # StandUp / StandDown / RecoveryStand duration


@dataclass
class Go2Body:
    limits: BodyLimits = field(default_factory=BodyLimits)
    mode: int = api.MODE_LIE_DOWN
    t_s: float = 0.0  # time of the last step
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # body frame vx, vy, vyaw
    target: np.ndarray = field(default_factory=lambda: np.zeros(3))
    last_move_s: float = -math.inf
    body_height: float = LYING_HEIGHT_M
    progress: float = 0.0  # of the running transition, 0..1
    speed_level: int = 0
    # Motion over the ground nobody commanded and the state does not report (foot slip, velocity tracking error),
    # body frame vx, vy (m/s), vyaw (rad/s): added to the pose, standing included (sim/world_variants.py drives it).
    slip: np.ndarray = field(default_factory=lambda: np.zeros(3))
    _transition: tuple[int, float, float, float] | None = (
        None  # (final mode, start s, from height, to height)
    )

    # --- requests; each returns the RPC status code ---

    def request(self, api_id: int, params: dict, now_s: float) -> int:
        self.step(now_s)
        handler = {
            api.DAMP: self._damp,
            api.BALANCE_STAND: self._balance_stand,
            api.STOP_MOVE: self._stop_move,
            api.STAND_UP: self._stand_up,
            api.STAND_DOWN: self._stand_down,
            api.RECOVERY_STAND: self._recovery_stand,
            api.MOVE: self._move,
            api.SPEED_LEVEL: self._speed_level,
        }.get(api_id)
        if handler is None:
            return api.ERR_API_NOT_IMPLEMENTED
        return handler(params, now_s)

    def accepts_move(self) -> bool:
        return self.mode in api.MOVABLE_MODES and self._transition is None

    def _move(self, params: dict, now_s: float) -> int:
        if not self.accepts_move():  # e.g. standing locked after StandUp: Move has no effect
            return ERR_REFUSED
        try:
            vx, vy, wz = (float(params.get(k, 0.0)) for k in ("x", "y", "z"))
        except (TypeError, ValueError):
            return api.ERR_API_PARAMETER
        if not all(math.isfinite(v) for v in (vx, vy, wz)):
            return api.ERR_API_PARAMETER
        self.target = np.array(clamp_move(vx, vy, wz))
        self.last_move_s = now_s
        self.mode = api.MODE_LOCOMOTION
        return api.OK

    def _stop_move(self, params: dict, now_s: float) -> int:
        self.target = np.zeros(3)
        self.last_move_s = -math.inf
        return api.OK

    def _balance_stand(self, params: dict, now_s: float) -> int:
        if self.mode not in (api.MODE_JOINT_LOCK, api.MODE_IDLE, *api.MOVABLE_MODES) or self._transition:
            return ERR_REFUSED
        self.mode = api.MODE_BALANCE_STAND
        return api.OK

    def _stand_up(self, params: dict, now_s: float) -> int:
        self._halt()
        self._begin(api.MODE_JOINT_LOCK, now_s, STANDING_HEIGHT_M)
        return api.OK

    def _stand_down(self, params: dict, now_s: float) -> int:
        if self.mode in (api.MODE_LIE_DOWN, api.MODE_DAMPING):
            return api.OK if self.mode == api.MODE_LIE_DOWN else ERR_REFUSED
        self._halt()
        self._begin(api.MODE_LIE_DOWN, now_s, LYING_HEIGHT_M)
        return api.OK

    def _recovery_stand(self, params: dict, now_s: float) -> int:
        self._halt()
        self._begin(api.MODE_BALANCE_STAND, now_s, STANDING_HEIGHT_M, during=api.MODE_RECOVERY_STAND)
        return api.OK

    def _damp(self, params: dict, now_s: float) -> int:
        self._halt()
        self.velocity = np.zeros(3)  # the joints go limp: no more walking
        self._transition = None
        self.mode = api.MODE_DAMPING
        self.body_height = LYING_HEIGHT_M
        return api.OK

    def _speed_level(self, params: dict, now_s: float) -> int:
        level = params.get("data")
        if level not in (-1, 0, 1):
            return api.ERR_API_PARAMETER
        self.speed_level = level  # recorded only: the emulator keeps the vendor limits at every level
        return api.OK

    def _halt(self) -> None:
        self.target = np.zeros(3)
        self.last_move_s = -math.inf

    def _begin(self, final_mode: int, now_s: float, to_height: float, during: int | None = None) -> None:
        self._transition = (final_mode, now_s, self.body_height, to_height)
        self.progress = 0.0
        if during is not None:
            self.mode = during

    # --- time ---

    def step(self, now_s: float) -> None:
        """Advance to `now_s`: transitions, the Move hold, acceleration-limited velocity, the pose."""
        dt = now_s - self.t_s
        if dt <= 0:
            return
        if now_s - self.last_move_s > self.limits.move_hold_s:
            self.target = np.zeros(3)
        max_dv = np.asarray(self.limits.accel) * dt
        v0 = self.velocity
        v1 = v0 + np.clip(self.target - v0, -max_dv, max_dv)
        vm = 0.5 * (v0 + v1) + self.slip  # trapezoidal: exact for a constant acceleration
        yaw_mid = self.yaw + 0.5 * vm[2] * dt
        c, s = math.cos(yaw_mid), math.sin(yaw_mid)
        self.x += (c * vm[0] - s * vm[1]) * dt
        self.y += (s * vm[0] + c * vm[1]) * dt
        self.yaw = math.atan2(math.sin(self.yaw + vm[2] * dt), math.cos(self.yaw + vm[2] * dt))
        self.velocity = v1
        self.t_s = now_s
        if self.mode == api.MODE_LOCOMOTION and not np.any(self.target) and not np.any(v1):
            self.mode = api.MODE_BALANCE_STAND  # stopped walking: back to balance stand
        if self._transition is not None:
            final, start, h0, h1 = self._transition
            self.progress = min(1.0, (now_s - start) / self.limits.transition_s)
            self.body_height = h0 + (h1 - h0) * self.progress
            if self.progress >= 1.0:
                self.mode, self._transition, self.progress = final, None, 0.0
