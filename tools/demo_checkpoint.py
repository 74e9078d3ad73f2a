"""Random-weight checkpoints built in code, for tests and the engine benchmark: `demo` (the tiny preset, 32 px
images) and `paper` (Qwen2.5-0.5B dimensions, 2 images at 224 px, 64 ActionQuery tokens, M=20, S_tr=10), both with
the Go2 + SO-101 layout (base vx, vy, wz + 6 arm joint targets; arm positions/velocities and base velocity in)."""

from __future__ import annotations

from pathlib import Path

from drivers.types import SO101_JOINTS
from policy_runtime.types import BASE_CHANNELS, arm_channel

ACTION_LAYOUT = [*BASE_CHANNELS, *(arm_channel(j) for j in SO101_JOINTS)]
PROPRIO_LAYOUT = [
    *(f"arm.{j}" for j in SO101_JOINTS),
    *(f"arm.{j}.vel" for j in SO101_JOINTS),
    *BASE_CHANNELS,
]
CAMERAS = ["third_person", "wrist"]
# SI ranges of the actions: base m/s and rad/s, joints rad (inside the SO-101 limits).
ACTION_LOW = [-0.5, -0.3, -1.0, -1.5, -1.5, -1.5, -1.5, -2.0, -0.1]
ACTION_HIGH = [0.5, 0.3, 1.0, 1.5, 1.5, 1.5, 1.5, 2.0, 1.5]


def build_random_checkpoint(
    directory: Path,
    size: str = "demo",
    seed: int = 0,
    inference_steps: int | None = None,
    anchor_image: bool = False,
    gripper_head: bool = False,
) -> Path:
    """`inference_steps` overrides the preset's 10 denoising steps (tests use fewer to keep the graphs small);
    `anchor_image` (AnchorVLA4D) and `gripper_head` (AnchorRefine, on arm.gripper) turn the options on."""
    import torch

    from policy_runtime.model.checkpoint import save_checkpoint
    from policy_runtime.model.config import AnchorsMeta, CheckpointConfig, GripperHeadConfig, Normalization
    from policy_runtime.model.policy import AnchorVLAPolicy
    from policy_runtime.model.presets import paper_architecture, tiny_architecture

    a, p = len(ACTION_LAYOUT), len(PROPRIO_LAYOUT)
    if size == "demo":
        arch = tiny_architecture(action_dim=a, proprio_dim=p, horizon=8, num_anchors=8)
    elif size == "paper":
        arch = paper_architecture(action_dim=a, proprio_dim=p, horizon=8)
    else:
        raise ValueError(f"size {size!r}: demo or paper")
    if inference_steps is not None:
        arch = arch.model_copy(
            update={"head": arch.head.model_copy(update={"inference_steps": inference_steps})}
        )
    if anchor_image:
        arch = arch.model_copy(update={"backbone": arch.backbone.model_copy(update={"anchor_image": True})})
    if gripper_head:
        gripper = GripperHeadConfig(channel_index=ACTION_LAYOUT.index(arm_channel("gripper")))
        arch = arch.model_copy(update={"gripper_head": gripper})
    torch.manual_seed(seed)
    policy = AnchorVLAPolicy(arch).eval()
    m, h = arch.head.num_anchors, arch.head.horizon
    # Smooth anchor trajectories in [-1, 1], as K-means over expert chunks gives.
    ramp = torch.linspace(0, 1, h)[None, :, None]
    start, end = torch.rand(m, 1, a) * 1.6 - 0.8, torch.rand(m, 1, a) * 1.6 - 0.8
    policy.head.anchors.copy_(start + (end - start) * ramp)
    torch.nn.init.normal_(policy.residual.mlp[-1].weight, std=0.02)  # a non-zero residual, so it is exercised
    # AdaLN-Zero starts with zero gates, so an untrained head would ignore the bridge features entirely and any
    # backbone error would vanish before the chunk; open the gates as training does, so checks see it.
    modulations = [block.modulation[1] for block in policy.head.blocks] + [policy.head.final_modulation[1]]
    for layer in modulations:
        torch.nn.init.normal_(layer.weight, std=0.05)
    config = CheckpointConfig(
        architecture=arch,
        action_layout=ACTION_LAYOUT,
        proprio_layout=PROPRIO_LAYOUT,
        cameras=CAMERAS,
        normalization=Normalization(
            action_low=ACTION_LOW, action_high=ACTION_HIGH, proprio_mean=[0.0] * p, proprio_std=[1.0] * p
        ),
        anchors=AnchorsMeta(count=m, horizon=h, source="random (built in code)"),
        provenance={"built_by": "tools.demo_checkpoint", "size": size, "seed": seed, "trained": False},
    )
    return save_checkpoint(Path(directory), policy, config)
