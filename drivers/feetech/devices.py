"""Builds the SO-101 arm from the `robot.arm` config section (drivers 'feetech' and 'emulated')."""

from __future__ import annotations

from drivers.errors import UserError
from drivers.feetech.calibration import ArmCalibration, default_calibration, load_calibration
from drivers.feetech.so101 import SO101Arm


def _calibration(arm_config) -> tuple[ArmCalibration, str]:
    names = tuple(arm_config.joint_names)
    if arm_config.calibration is not None:
        return load_calibration(arm_config.calibration), str(arm_config.calibration)
    if arm_config.driver == "emulated":
        if len(arm_config.ids) != len(names):
            raise UserError(
                f"robot.arm: {len(arm_config.ids)} ids for {len(names)} joint_names; give one id per joint"
            )
        return default_calibration(tuple(arm_config.ids), names), "the emulator's default calibration"
    raise UserError(
        "robot.arm.calibration is not set: run `anchorvla calibrate arm --port PORT --out FILE` and set it"
    )


def build_so101(arm_config, world=None) -> SO101Arm:
    calibration, source = _calibration(arm_config)
    common = dict(
        joint_names=tuple(arm_config.joint_names),
        health_period_s=arm_config.health_period_s,
        retries=arm_config.retries,
        calibration_path=source,
    )
    if arm_config.driver == "emulated":
        from drivers.emulated.so101 import EmulatedSO101Arm

        return EmulatedSO101Arm(calibration, baudrate=arm_config.baudrate, world=world, **common)
    if not arm_config.port:
        raise UserError(
            "robot.arm.port is not set: give the servo adapter's device (e.g. /dev/so101 with the udev rule)"
        )
    calibration_ids = set(calibration.ids)
    if set(arm_config.ids) != calibration_ids:
        raise UserError(
            f"robot.arm.ids {arm_config.ids} differ from the ids in {source} ({sorted(calibration_ids)}); make them agree"
        )
    return SO101Arm(arm_config.port, calibration, baudrate=arm_config.baudrate, **common)
