"""The torch engine: runs a checkpoint directory (policy_runtime/model/checkpoint.py) with PyTorch.

`infer` returns the chunk in SI units with the checkpoint's action channel names, the chosen anchor and every
anchor's score; `context` carries the pooled vector the residual needs. `residual` runs the residual MLP for one
step on the fast loop. Noise comes from a seeded generator, so a fixed seed and inputs give fixed chunks. After
`condition_on_prefix` each chunk is conditioned on its observation's prefix (real-time chunking), as a bundle's head
graph is.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from anchorvla.errors import UserError
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.preprocess import ProprioLayout, preprocess_frames
from policy_runtime.types import ActionChunk, GripperPlan, Observation


class TorchEngine:
    def __init__(
        self,
        checkpoint: Path,
        instruction: str = "",
        use_residual: bool = True,
        num_steps: int | None = None,
        seed: int = 0,
        threads: int | None = None,
    ):
        if threads:
            torch.set_num_threads(threads)
        self.policy, self.config = load_checkpoint(Path(checkpoint), with_residual=use_residual)
        self.use_residual = use_residual
        self.num_steps = num_steps
        self.instruction = instruction
        self.channels = tuple(self.config.action_layout)
        self.dt_ns = round(self.config.dt_s * 1e9)
        norm = self.config.normalization
        self._a_low = np.asarray(norm.action_low)
        self._a_half_range = (np.asarray(norm.action_high) - self._a_low) / 2
        self._p_mean = np.asarray(norm.proprio_mean)
        self._p_std = np.asarray(norm.proprio_std)
        self._delta_std = None if norm.proprio_delta_std is None else np.asarray(norm.proprio_delta_std)
        self._tokenizer = self.policy.tokenizer  # the checkpoint's own, checked against its LM
        self._generator = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()
        self._prefix_score_weight: float | None = None  # set by condition_on_prefix

    def condition_on_prefix(self, score_weight: float) -> None:
        """Condition each chunk on its observation's prefix, the candidates' prefix distance weighted
        `score_weight` in their scores (the anchored head only)."""
        if self.config.architecture.head.mode != "anchored":
            raise UserError(
                f"policy.prefix_conditioning: the checkpoint's head is '{self.config.architecture.head.mode}', "
                "prefix conditioning needs the anchored head; set policy.prefix_conditioning: false"
            )
        self._prefix_score_weight = score_weight

    def _prefix(self, obs: Observation) -> dict:
        """The head's prefix arguments for `obs` (none without conditioning or a prefix)."""
        if self._prefix_score_weight is None or obs.prefix is None:
            return {}
        head = self.config.architecture.head
        actions = np.asarray(obs.prefix, np.float64)[: head.horizon]
        prefix = torch.zeros(1, head.horizon, head.action_dim)
        normalized = np.clip((actions - self._a_low) / self._a_half_range - 1, -1.0, 1.0)
        prefix[0, : len(actions)] = torch.from_numpy(normalized.astype(np.float32))
        return {
            "prefix": prefix,
            "prefix_length": torch.tensor([len(actions)]),
            "prefix_score_weight": torch.tensor([self._prefix_score_weight]),
        }

    def reseed(self, seed: int) -> None:
        """Restart the head's noise from `seed`: an episode's chunks then depend on its own seed alone."""
        with self._lock:
            self._generator.manual_seed(seed)

    # -- conversions ------------------------------------------------------------------------------------------
    def _proprio(self, obs: Observation) -> np.ndarray:
        raw = ProprioLayout(tuple(self.config.proprio_layout), tuple(obs.arm.joint_names)).vector(
            obs.arm, obs.base, obs.goal
        )
        if not np.all(np.isfinite(raw)):
            bad = [n for n, v in zip(self.config.proprio_layout, raw, strict=True) if not np.isfinite(v)]
            raise UserError(
                f"proprio channel(s) {', '.join(bad)} have no finite value (is the base configured? "
                "goal.* come from the simulator's task or perception)"
            )
        return ((raw - self._p_mean) / self._p_std).astype(np.float32)

    def _proprio_delta(self, obs: Observation) -> np.ndarray:
        """The normalised state delta (policy_runtime/preprocess.py `state_delta`) for a backbone that reads it."""
        layout = ProprioLayout(tuple(self.config.proprio_layout), tuple(obs.arm.joint_names))
        delta = layout.delta(obs.arm, obs.base, obs.previous_arm, obs.previous_base, obs.goal)
        assert self._delta_std is not None
        return (delta / self._delta_std).astype(np.float32)

    def _images(self, obs: Observation) -> torch.Tensor:
        arch = self.config.architecture
        size = (arch.image_size, arch.image_size)
        anchors = obs.anchor_frames if arch.backbone is not None and arch.backbone.anchor_image else None
        images = preprocess_frames(
            obs.frames, self.config.cameras, size, arch.image_mean, arch.image_std, anchor_frames=anchors
        )
        return torch.from_numpy(images)[None]

    def _text(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._tokenizer is not None and self.config.architecture.backbone is not None
        ids, mask = self._tokenizer.encode(
            [instruction], self.config.architecture.backbone.max_instruction_tokens
        )
        return torch.from_numpy(ids), torch.from_numpy(mask)

    # -- PolicyEngine -----------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One forward pass on zero inputs of the right shapes."""
        arch = self.config.architecture
        proprio = torch.zeros(1, arch.head.proprio_dim)
        extra = {}
        if arch.backbone is not None:
            ids, mask = self._text(self.instruction)
            extra = dict(
                images=torch.zeros(
                    1, arch.backbone.images_per_observation, 3, arch.image_size, arch.image_size
                ),
                input_ids=ids,
                attention_mask=mask,
            )
            if self.policy.reads_state_delta:
                extra["proprio_delta"] = torch.zeros_like(proprio)
        with torch.inference_mode():
            self.policy(
                proprio, torch.zeros(self.policy.head.noise_shape(1)), num_steps=self.num_steps, **extra
            )

    def infer(self, obs: Observation) -> ActionChunk:
        proprio = torch.from_numpy(self._proprio(obs))[None]
        extra = {}
        if self.config.architecture.backbone is not None:
            ids, mask = self._text(obs.instruction or self.instruction)
            extra = dict(images=self._images(obs), input_ids=ids, attention_mask=mask)
            if self.policy.reads_state_delta:
                extra["proprio_delta"] = torch.from_numpy(self._proprio_delta(obs))[None]
        with self._lock:  # the generator and the module are not shared across threads
            noise = torch.randn(self.policy.head.noise_shape(1), generator=self._generator)
            with torch.inference_mode():
                cond = self.policy.condition(proprio, **extra)
                chunk, index, scores, _, context = self.policy.head.sample(
                    cond, proprio, noise, self.num_steps, **self._prefix(obs)
                )
                gripper = self._gripper_plan(context, proprio, chunk)
        actions = (chunk[0].double().numpy() + 1) * self._a_half_range + self._a_low
        return ActionChunk(
            t_obs_ns=obs.t_ns,
            dt_ns=self.dt_ns,
            channels=self.channels,
            actions=actions,
            anchor_index=int(index[0]) if self.config.architecture.head.mode == "anchored" else None,
            scores=scores[0].numpy().copy(),
            context=context[0].numpy().copy(),
            gripper=gripper,
        )

    def _gripper_plan(self, context, proprio, chunk) -> GripperPlan | None:
        head = self.policy.gripper_head
        if head is None:
            return None
        g = head.config.channel_index
        return GripperPlan(
            channel=g,
            logits=head(context, proprio, chunk)[0].double().numpy(),
            margin=float(head.margin),
            closed_value=float(self._a_low[g]),
            open_value=None
            if head.config.open_follows_plan
            else float(self._a_low[g] + 2 * self._a_half_range[g]),
        )

    def residual(
        self, obs: Observation, chunk: ActionChunk, j: int, planned: np.ndarray
    ) -> np.ndarray | None:
        """Correction (SI units) for action j of `chunk`, given the observation now."""
        if not self.use_residual or chunk.context is None:
            return None
        proprio = torch.from_numpy(self._proprio(obs))[None]
        planned_norm = torch.from_numpy(
            ((np.asarray(planned) - self._a_low) / self._a_half_range - 1).astype(np.float32)
        )[None]
        context = torch.from_numpy(np.asarray(chunk.context, dtype=np.float32))[None]
        with torch.inference_mode():
            delta = self.policy.residual(proprio, context, planned_norm, torch.tensor([j]))
        return delta[0].double().numpy() * self._a_half_range

    def close(self) -> None:
        pass
