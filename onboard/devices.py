"""Builds the drivers and the engine a config names. Imports each driver's module only when chosen, so the
process starts without the SDKs (or torch) it does not use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anchorvla.errors import UserError
from drivers.protocols import Arm, Base, Camera
from onboard.config import Config
from onboard.standins import StandinArm, StandinBase, StandinCamera, StandinEngine
from policy_runtime.engines.base import PolicyEngine

if TYPE_CHECKING:
    from drivers.emulated.world import World


def build_arm(config: Config, world: World | None = None) -> Arm:
    """`world`: the emulated robot's shared World, which driver 'emulated' writes its joints into."""
    arm = config.robot.arm
    if arm.driver == "standin":
        return StandinArm(tuple(arm.joint_names))
    if arm.driver in ("feetech", "emulated"):
        world = world if arm.driver == "emulated" else None
        return build_so101(arm, world=world, period_s=1.0 / config.control.rate_hz)
    raise AssertionError(f"unhandled robot.arm.driver {arm.driver!r}")  # the config validates the choices


def _arm_calibration(arm_config):
    """(calibration, where it came from) for `robot.arm`."""
    from drivers.feetech.calibration import default_calibration, load_calibration

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


def build_so101(arm_config, world=None, period_s: float | None = None):
    """The SO-101 driver of `robot.arm` (drivers 'feetech' and 'emulated'); imports the servo SDK. `period_s`:
    the control period, which bounds each bus transaction's retries (drivers/feetech/so101.py)."""
    from drivers.feetech.so101 import SO101Arm

    calibration, source = _arm_calibration(arm_config)
    common = dict(
        joint_names=tuple(arm_config.joint_names),
        health_period_s=arm_config.health_period_s,
        retries=arm_config.retries,
        calibration_path=source,
        period_s=period_s,
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


def build_leader(config: Config):
    """The leader arm of `teleop.leader` (anchorvla record); the emulated one follows a scripted hand."""
    from drivers.feetech.calibration import default_calibration, load_calibration

    leader = config.teleop.leader
    names = tuple(config.robot.arm.joint_names)
    if leader.driver == "none":
        raise UserError(
            "teleop.leader.driver is 'none': set it to 'feetech' (with port and calibration) for an SO-101 leader arm"
        )
    if leader.driver == "emulated":
        from drivers.emulated.so101 import EmulatedSO101Leader, sweeping_hand

        return EmulatedSO101Leader(
            default_calibration(tuple(leader.ids), names), leader.baudrate, hand=sweeping_hand, joint_names=names
        )
    from drivers.feetech.leader import SO101Leader

    if not leader.port or leader.calibration is None:
        raise UserError(
            "teleop.leader needs port (its own servo adapter) and calibration (`anchorvla calibrate arm` on the leader)"
        )
    return SO101Leader(leader.port, load_calibration(leader.calibration), leader.baudrate, joint_names=names)


def build_sticks(config: Config, base: Base | None):
    """The hand controller of `teleop.base`, or None: a Linux gamepad, or the Go2's wireless remote (read
    through the base's own DDS connection)."""
    teleop = config.teleop.base
    if teleop.driver == "none":
        return None
    if teleop.driver == "gamepad":
        from drivers.gamepad import Gamepad

        if not teleop.device:
            raise UserError("teleop.base.device: give the gamepad's evdev node (ls /dev/input/by-id/)")
        return Gamepad(teleop.device)
    from drivers.unitree.go2 import Go2Base
    from onboard.teleop import RemoteSticks

    if not isinstance(base, Go2Base):
        raise UserError("teleop.base.driver 'remote' reads the Go2's remote: robot.base.driver must be 'go2' or 'emulated'")
    return RemoteSticks(base)


def build_base(config: Config, world=None) -> Base | None:
    """`world`: a drivers.emulated.world.World that the emulated Go2 writes its pose into (driver 'emulated')."""
    base = config.robot.base
    if base.driver == "none":
        return None
    if base.driver == "standin":
        return StandinBase()
    if base.driver in ("go2", "emulated"):
        options = dict(
            domain_id=base.domain_id,
            state_timeout_s=base.state_timeout_s,
            max_state_age_s=base.max_state_age_s,
            rpc_timeout_s=base.rpc_timeout_s,
            stand_up_on_start=base.stand_up_on_start,
        )
        if base.driver == "go2":
            from drivers.unitree.go2 import Go2Base

            return Go2Base(base.interface, **options)
        from drivers.emulated.go2 import Go2BaseWithEmulator

        return Go2BaseWithEmulator(world=world, emulator_rate_hz=base.emulator_rate_hz, **options)
    raise AssertionError(f"unhandled robot.base.driver {base.driver!r}")


def build_cameras(config: Config, world: World | None = None) -> list[Camera]:
    """The configured cameras; driver 'synthetic' renders `world` (the emulated robot's shared World)."""
    cameras: list[Camera] = []
    for cam in config.robot.cameras:
        where = f"robot.cameras[{cam.name}]"
        if cam.driver == "standin":
            cameras.append(StandinCamera(cam.name, cam.width, cam.height, cam.fps))
        elif cam.driver in ("realsense", "bag"):
            from drivers.realsense import RealSenseCamera

            if cam.driver == "realsense" and not cam.serial:
                raise UserError(
                    f"{where}: driver 'realsense' needs serial (run 'rs-enumerate-devices -s' to list them)"
                )
            if cam.driver == "bag" and cam.path is None:
                raise UserError(f"{where}: driver 'bag' needs path (a .db3 or .bag recording)")
            cameras.append(
                RealSenseCamera(
                    cam.name,
                    serial=cam.serial if cam.driver == "realsense" else None,
                    path=cam.path if cam.driver == "bag" else None,
                    width=cam.width,
                    height=cam.height,
                    fps=cam.fps,
                    realtime=cam.realtime,
                    loop=cam.loop,
                    record=cam.record if cam.driver == "realsense" else None,
                    reconnect_after_s=cam.reconnect_after_s if cam.driver == "realsense" else None,
                )
            )
        elif cam.driver == "uvc":
            from drivers.uvc import UVCCamera, device_for_serial

            if not (cam.device or cam.serial):
                raise UserError(f"{where}: driver 'uvc' needs serial (see `ls /dev/v4l/by-id/`) or device")
            device = cam.device or device_for_serial(cam.serial)
            cameras.append(
                UVCCamera(
                    cam.name,
                    device,
                    width=cam.width,
                    height=cam.height,
                    fps=cam.fps,
                    reconnect_after_s=cam.reconnect_after_s,
                )
            )
        elif cam.driver == "synthetic":
            from drivers.emulated.cameras import SyntheticCamera

            if world is None:
                raise UserError(
                    f"{where}: driver 'synthetic' renders the emulated robot; use it with the emulated arm/base"
                )
            view = cam.view or cam.name
            cameras.append(SyntheticCamera(cam.name, world, view, cam.width, cam.height, cam.fps))
        else:
            raise AssertionError(f"unhandled {where}.driver {cam.driver!r}")
    return cameras


def _with_prefix(engine: PolicyEngine, policy) -> PolicyEngine:
    """The engine with real-time chunking switched on when policy.prefix_conditioning asks for it (a bundle without
    the prefix inputs is refused there)."""
    if policy.prefix_conditioning:
        if not hasattr(engine, "condition_on_prefix"):
            raise UserError(
                f"policy.prefix_conditioning needs a policy engine (onnxruntime, tensorrt, torch), not "
                f"'{policy.engine}'; set policy.prefix_conditioning: false"
            )
        engine.condition_on_prefix(policy.prefix_score_weight)
    return engine


def build_engine(config: Config) -> PolicyEngine:
    policy = config.policy
    dt_ns = round(1e9 / config.control.rate_hz)
    if policy.engine == "standin":
        s = policy.standin
        standin = StandinEngine(
            tuple(config.robot.arm.joint_names),
            dt_ns,
            compute_ms=s.compute_ms,
            compute=s.compute,
            chunk_length=s.chunk_length,
            amplitude=s.amplitude,
            period_s=s.period_s,
            base_speed=s.base_speed,
            fail_every=s.fail_every,
            nan_every=s.nan_every,
        )
        return _with_prefix(standin, policy)
    if policy.engine == "torch":
        if policy.bundle is None:
            raise UserError("policy.engine 'torch' needs policy.bundle: the checkpoint directory to run")
        from policy_runtime.engines.torch_engine import TorchEngine

        torch_engine = TorchEngine(policy.bundle, instruction=policy.instruction, use_residual=policy.residual)
        return _with_prefix(torch_engine, policy)
    if policy.engine in ("onnxruntime", "tensorrt"):
        if policy.bundle is None:
            raise UserError(
                f"policy.engine '{policy.engine}' needs policy.bundle (a directory made by `anchorvla export`)"
            )
        if policy.engine == "onnxruntime":
            from policy_runtime.engines.onnx_engine import OnnxEngine

            engine_class, options = OnnxEngine, {"providers": policy.providers, "cpus": policy.cpus}
        else:
            from policy_runtime.engines.tensorrt_engine import TensorRTEngine

            engine_class, options = TensorRTEngine, {}
        engine = engine_class(
            policy.bundle,
            precision=policy.precision,
            threads=policy.threads,
            force_unverified=policy.force_unverified,
            expected_checkpoint_sha256=policy.checkpoint_sha256,
            **options,
        )
        if abs(engine.dt_ns - dt_ns) > dt_ns // 1000:
            raise UserError(
                f"control.rate_hz {config.control.rate_hz} differs from the bundle's {1e9 / engine.dt_ns:.3g} Hz "
                "control rate; set control.rate_hz to match the policy"
            )
        return _with_prefix(engine, policy)
    raise AssertionError(f"unhandled policy.engine {policy.engine!r}")
