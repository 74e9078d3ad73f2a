"""The SO-101 drivers wired to an in-process servo-bus emulator: the robot's code path, with a pty for a bus.

`EmulatedSO101Arm` is the follower (it may step the shared World); `EmulatedSO101Leader` is a leader arm on a
second emulated bus, whose joints a script moves as an operator's hand would (`move_by_hand`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.feetech.bus import FeetechBus
from drivers.feetech.calibration import ArmCalibration
from drivers.feetech.leader import SO101Leader
from drivers.feetech.so101 import SO101Arm


class _OnEmulatedBus:
    """On `start()`, a `ServoBusEmulator` whose EEPROM holds the calibration, then the real driver on its pty."""

    emulator: ServoBusEmulator
    bus: FeetechBus

    def _attach_emulator(self, calibration: ArmCalibration, baudrate: int, world) -> None:
        self.emulator = ServoBusEmulator(
            ids=calibration.ids, baudrate=baudrate, calibration=calibration, world=world
        )

    def start(self) -> None:
        self.emulator.start()
        self.bus = self.bus.moved_to(self.emulator.port)
        try:
            super().start()
        except BaseException:
            self.emulator.close()
            raise

    def stop(self) -> None:
        super().stop()
        self.emulator.close()


class EmulatedSO101Arm(_OnEmulatedBus, SO101Arm):
    def __init__(self, calibration: ArmCalibration, baudrate: int = 1_000_000, world=None, **arm_kwargs):
        self._attach_emulator(calibration, baudrate, world)
        super().__init__("(emulator not started)", calibration, baudrate=baudrate, **arm_kwargs)


class EmulatedSO101Leader(_OnEmulatedBus, SO101Leader):
    """`hand`: an operator's script, the leader's pose (rad) at t seconds since start; while the leader runs, a
    thread moves the joints along it at 100 Hz. Without one, the joints stay where `move_by_hand` puts them."""

    def __init__(
        self,
        calibration: ArmCalibration,
        baudrate: int = 1_000_000,
        hand: Callable[[float], np.ndarray] | None = None,
        **arm_kwargs,
    ):
        self._attach_emulator(calibration, baudrate, None)
        super().__init__("(emulator not started)", calibration, baudrate=baudrate, **arm_kwargs)
        self.hand = hand
        self._moving = threading.Event()

    def start(self) -> None:
        super().start()
        if self.hand is not None:
            self._moving.set()
            threading.Thread(target=self._follow_hand, name="scripted-hand", daemon=True).start()

    def _follow_hand(self) -> None:
        t0 = time.monotonic()
        while self._moving.is_set():
            self.move_by_hand(self.hand(time.monotonic() - t0))
            time.sleep(0.01)

    def stop(self) -> None:
        self._moving.clear()
        super().stop()

    def move_by_hand(self, positions: np.ndarray) -> None:
        """Put the leader's joints at `positions` (rad, layout `joint_names`), as a hand moving the limp arm."""
        ticks = self._cal.rad_to_ticks(np.asarray(positions, dtype=np.float64))
        servos = {s.value("ID"): s for s in self.emulator.servos}
        with self.emulator.lock:
            for servo_id, t in zip(self.ids, ticks.tolist(), strict=True):
                servos[servo_id].move_by_hand(t)


def sweeping_hand(t_s: float) -> np.ndarray:
    """An operator's demonstration for the emulated leader: the arm reaches forward and sweeps side to side,
    opening and closing the gripper, over a 6 s cycle (SO-101 joint order)."""
    phase = 2 * math.pi * t_s / 6.0
    return np.array([
        0.5 * math.sin(phase),  # shoulder_pan
        0.4 + 0.25 * math.sin(2 * phase),  # shoulder_lift
        -0.3 + 0.2 * math.cos(phase),  # elbow_flex
        0.5,  # wrist_flex
        0.0,  # wrist_roll
        0.6 + 0.5 * math.sin(phase),  # gripper
    ])  # fmt: skip
