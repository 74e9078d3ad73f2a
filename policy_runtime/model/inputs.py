"""Turning observations into the policy's input tensors, shared by training and the torch engine.

This is the model package's own minimal preprocessing (images HxWx3 uint8 -> float CHW resized and normalised
with the checkpoint's mean/std; proprio vector by named layout). `policy_runtime/preprocess.py` (numpy, written
in parallel) is meant to replace it; the two should be unified.

Proprio channel names read from an Observation: `arm.<joint>.pos` (rad), `arm.<joint>.vel` (rad/s),
`base.vx`, `base.vy` (body-frame m/s), `base.wz` (rad/s), `base.x`, `base.y` (m), `base.yaw` (rad),
`goal.x`, `goal.y`, `goal.z` (the target's position in the arm base frame, m: `Observation.goal`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from drivers.errors import UserError
from policy_runtime.types import Observation


def images_to_tensor(images: np.ndarray, size: int, mean: list[float], std: list[float]) -> torch.Tensor:
    """(B, N, H, W, 3) uint8 -> (B, N, 3, size, size) float32, bilinear resize when H or W differs from size."""
    b, n, h, w, _ = images.shape
    x = (
        torch.from_numpy(np.ascontiguousarray(images)).reshape(b * n, h, w, 3).permute(0, 3, 1, 2).float()
        / 255.0
    )
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((x - m) / s).reshape(b, n, 3, size, size)


def _base_value(obs: Observation, field: str) -> float:
    base = obs.base
    if base is None:
        raise UserError(
            f"the checkpoint's proprio layout needs base.{field} but the robot has no base configured"
        )
    values = {
        "vx": base.velocity[0],
        "vy": base.velocity[1],
        "wz": base.yaw_speed,
        "x": base.position[0],
        "y": base.position[1],
        "yaw": base.yaw,
    }
    if field not in values:
        raise UserError(
            f"proprio channel base.{field} is unknown (known: {', '.join('base.' + k for k in values)})"
        )
    return float(values[field])


_GOAL_AXES = ("x", "y", "z")


def proprio_from_observation(obs: Observation, layout: list[str] | tuple[str, ...]) -> np.ndarray:
    """The proprio vector in the checkpoint's named layout (SI units, before normalization)."""
    joints = {name: i for i, name in enumerate(obs.arm.joint_names)}
    out = np.empty(len(layout), dtype=np.float64)
    for i, name in enumerate(layout):
        parts = name.split(".")
        if parts[0] == "base" and len(parts) == 2:
            out[i] = _base_value(obs, parts[1])
        elif parts[0] == "goal" and len(parts) == 2 and parts[1] in _GOAL_AXES:
            if obs.goal is None:
                raise UserError(
                    f"the checkpoint's proprio layout needs {name} but nothing supplies a goal "
                    "(the simulator's task does; on the robot a perception module must)"
                )
            out[i] = float(obs.goal[_GOAL_AXES.index(parts[1])])
        elif parts[0] == "arm" and len(parts) == 3 and parts[2] in ("pos", "vel"):
            if parts[1] not in joints:
                raise UserError(
                    f"proprio channel {name}: the arm has no joint '{parts[1]}' (has {', '.join(joints)})"
                )
            source = obs.arm.positions if parts[2] == "pos" else obs.arm.velocities
            out[i] = float(source[joints[parts[1]]])
        else:
            raise UserError(
                f"proprio channel '{name}' cannot be read from the robot (see policy_runtime/model/inputs.py)"
            )
    return out
