"""The SO-101 drivers wired to an in-process servo-bus emulator: the robot's code path, with a pty for a bus.

`EmulatedSO101Arm` is the follower (it may step the shared World); `EmulatedSO101Leader` is a leader arm on a
second emulated bus, whose joints a script moves as an operator's hand would (`move_by_hand`).
"""

from __future__ import annotations

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
        self.bus = FeetechBus(self.emulator.port, self.bus.baudrate, retries=self.bus.retries)
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
    def __init__(self, calibration: ArmCalibration, baudrate: int = 1_000_000, **arm_kwargs):
        self._attach_emulator(calibration, baudrate, None)
        super().__init__("(emulator not started)", calibration, baudrate=baudrate, **arm_kwargs)

    def move_by_hand(self, positions: np.ndarray) -> None:
        """Put the leader's joints at `positions` (rad, layout `joint_names`), as a hand moving the limp arm."""
        ticks = self._cal.rad_to_ticks(np.asarray(positions, dtype=np.float64))
        servos = {s.value("ID"): s for s in self.emulator.servos}
        with self.emulator.lock:
            for servo_id, t in zip(self.ids, ticks.tolist(), strict=True):
                servos[servo_id].move_by_hand(t)
