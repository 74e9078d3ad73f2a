"""The start-up check: from the config and the policy's own description alone, before any device is opened,
does the configured robot supply every input the policy reads and take every action it sends?

The policy's needs come from the bundle's manifest (engines onnxruntime/tensorrt) or the checkpoint's config.json
(engine torch), read without loading any graph or weight. Supplied are: `arm.<joint>` and `arm.<joint>.vel` for
the configured `robot.arm.joint_names`, `ee.x/y/z` when the SO-101's first five joints are configured, `base.*`
when a base is configured, `goal.*` only when the caller has a goal source (the simulator's `sim.task` in
`anchorvla run`; nothing on the robot yet), and cameras by name (or, for a policy that names none, by count).
Anything else ends start-up with one line naming what is missing (exit 2), instead of a refusal at the first
inference after the loops and the robot started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anchorvla.errors import UserError
from drivers.types import SO101_JOINTS
from onboard.config import Config
from policy_runtime.types import BASE_CHANNELS, arm_channel


@dataclass(frozen=True)
class PolicyNeeds:
    """What a policy reads and sends, by name."""

    source: str  # what the needs were read from, for the message
    proprio: tuple[str, ...]
    actions: tuple[str, ...]
    cameras: tuple[str, ...]  # camera names the policy reads (empty: the first `images` configured cameras)
    images: int  # cameras per observation (0: a policy without images)


def policy_needs(config: Config) -> PolicyNeeds | None:
    """The needs of the configured policy, or None for the stand-in engine (made from the config itself)."""
    policy = config.policy
    if policy.engine == "standin" or policy.bundle is None:
        return None  # the engine builder refuses a missing bundle with its own line
    if policy.engine == "torch":
        from policy_runtime.model.config import CheckpointConfig

        path = Path(policy.bundle) / "config.json"
        ckpt = CheckpointConfig.read(path)
        backbone = ckpt.architecture.backbone
        images = 0 if backbone is None else backbone.num_images
        return PolicyNeeds(
            str(path), tuple(ckpt.proprio_layout), tuple(ckpt.action_layout), tuple(ckpt.cameras), images
        )
    from policy_runtime.bundle import MANIFEST_FILE, read_manifest

    spec = read_manifest(Path(policy.bundle)).runtime
    images = 0 if spec.image is None else spec.image.num_images
    return PolicyNeeds(
        str(Path(policy.bundle) / MANIFEST_FILE),
        tuple(spec.proprio_layout),
        tuple(spec.action_layout),
        tuple(spec.cameras),
        images,
    )


def _proprio_supplied(channel: str, config: Config, goal_supplied: bool) -> bool:
    joints = set(config.robot.arm.joint_names)
    head, _, rest = channel.partition(".")
    if head == "base":
        return config.robot.base.driver != "none"
    if head == "goal":
        return goal_supplied
    if head == "ee":
        return set(SO101_JOINTS[:5]) <= joints
    if head == "arm":
        joint, _, suffix = rest.partition(".")
        return joint in joints and suffix in ("", "vel")
    return False


def _action_taken(channel: str, config: Config) -> bool:
    if channel in BASE_CHANNELS:
        return config.robot.base.driver != "none"
    return channel in {arm_channel(j) for j in config.robot.arm.joint_names}


def missing_inputs(config: Config, needs: PolicyNeeds, goal_supplied: bool) -> list[str]:
    """What the policy needs that the configured devices do not supply, one phrase per kind."""
    missing = []
    proprio = [c for c in needs.proprio if not _proprio_supplied(c, config, goal_supplied)]
    if proprio:
        note = (
            " (goal.* comes only from the simulator's sim.task)"
            if any(c.startswith("goal.") for c in proprio)
            else ""
        )
        missing.append(f"proprio {', '.join(proprio)}{note}")
    actions = [c for c in needs.actions if not _action_taken(c, config)]
    if actions:
        missing.append(f"action channel(s) {', '.join(actions)} that no configured device takes")
    configured = [c.name for c in config.robot.cameras]
    have = ", ".join(configured) or "none"
    if needs.cameras:
        cameras = [c for c in needs.cameras if c not in configured]
        if cameras:
            missing.append(f"camera(s) {', '.join(cameras)} (robot.cameras has: {have})")
    elif needs.images > len(configured):
        missing.append(f"{needs.images} cameras (robot.cameras has {len(configured)}: {have})")
    return missing


def check_policy_inputs(config: Config, *, goal_supplied: bool) -> None:
    """Raise UserError (exit 2, one line) when the configured robot cannot feed or carry out the policy.
    `goal_supplied`: whether something in this process gives observations their goal (the sim session)."""
    needs = policy_needs(config)
    if needs is None:
        return
    missing = missing_inputs(config, needs, goal_supplied)
    if missing:
        raise UserError(
            f"the policy ({needs.source}) needs what the configured robot does not supply: {'; '.join(missing)}; "
            "use a policy trained for this robot's devices, or configure the devices it needs"
        )
