"""The SO-101 driver wired to an in-process servo-bus emulator: the robot's code path, with a pty for a bus."""

from __future__ import annotations

from drivers.emulated.servo_bus import ServoBusEmulator
from drivers.feetech.bus import FeetechBus
from drivers.feetech.calibration import ArmCalibration
from drivers.feetech.so101 import SO101Arm


class EmulatedSO101Arm(SO101Arm):
    """On `start()`, a `ServoBusEmulator` whose EEPROM holds `calibration`, then the real driver on its pty."""

    def __init__(self, calibration: ArmCalibration, baudrate: int = 1_000_000, world=None, **arm_kwargs):
        self.emulator = ServoBusEmulator(
            ids=calibration.ids, baudrate=baudrate, calibration=calibration, world=world
        )
        super().__init__("(emulator not started)", calibration, baudrate=baudrate, **arm_kwargs)

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
