"""What the bundle engines (onnxruntime, tensorrt) share: the PolicyEngine methods over three graphs.

A subclass opens its sessions and implements `_run(role, feed) -> outputs in the graph's order`; this class turns
Observations into feeds (numpy only), draws the head's noise, and maps chunks and corrections to SI units. A feed
holds only the inputs the graph declares in the manifest (an exported graph drops inputs it does not use, e.g. the
linear head's noise). A head graph with real-time chunking inputs (`RuntimeSpec.prefix_conditioning`) always gets
them: the observation's prefix once `condition_on_prefix` switched it on, else an empty one (length 0), which gives
the chunk the graph would give without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from policy_runtime.bundle import BundleError, Manifest
from policy_runtime.engines.inputs import InputBuilder
from policy_runtime.types import ActionChunk, GripperPlan, Observation


class BundleEngine:
    def __init__(self, bundle_dir: Path, manifest: Manifest, variant: str, seed: int = 0):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.variant = variant
        spec = manifest.runtime
        self.inputs = InputBuilder(spec, self.bundle_dir)
        self.channels = tuple(spec.action_layout)
        self.dt_ns = round(spec.dt_s * 1e9)
        self._noise_shape = tuple(spec.noise_shape)
        self._rng = np.random.default_rng(seed)
        self._anchored = spec.mode == "anchored"
        graphs = manifest.variants[variant].graphs
        self._has_residual = "residual" in graphs
        self._graphs = {role: manifest.graphs[file] for role, file in graphs.items()}
        self._prefix_score_weight: float | None = None  # set by condition_on_prefix

    def condition_on_prefix(self, score_weight: float) -> None:
        """Condition each chunk on its observation's prefix (real-time chunking), the candidates' prefix distance
        weighted `score_weight` in their scores; a bundle exported without the prefix inputs is refused."""
        if not self.manifest.runtime.prefix_conditioning:
            raise BundleError(
                f"policy.prefix_conditioning: bundle {self.bundle_dir} has no prefix inputs (exported before "
                "real-time chunking, or not an anchored head); re-export its checkpoint with `anchorvla export` "
                "or set policy.prefix_conditioning: false"
            )
        self._prefix_score_weight = score_weight

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _call(self, role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(role, self._graphs[role].feed(feed))

    # -- arrays in, arrays out (verify and the benchmark call these) ---------------------------------------------
    def condition(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._call("backbone", feed)[0]

    def head(
        self,
        bridge: np.ndarray,
        proprio: np.ndarray,
        noise: np.ndarray,
        prefix: np.ndarray | None = None,
        score_weight: float = 0.0,
    ) -> list[np.ndarray]:
        """-> chunk (1, H, d) normalised, anchor index (1,), scores (1, K), context (1, C), and with a gripper head
        its logits (1, H). `prefix`: (p, d) normalised actions the chunk's first p steps are in-painted to (a graph
        with prefix inputs only)."""
        feed = {"bridge": bridge, "proprio": proprio, "noise": noise}
        return self._call("head", {**feed, **self.manifest.runtime.prefix_feed(prefix, score_weight)})

    def residual_normalized(self, proprio, context, planned, j: int) -> np.ndarray:
        feed = {"proprio": proprio, "context": context, "planned": planned, "j": np.array([j], np.int64)}
        return self._call("residual", feed)[0]

    def reseed(self, seed: int) -> None:
        """Restart the head's noise from `seed`: an episode's chunks then depend on its own seed alone."""
        self._rng = np.random.default_rng(seed)

    # -- PolicyEngine ------------------------------------------------------------------------------------------
    def _backbone_feed(self, obs: Observation, proprio: np.ndarray) -> dict[str, np.ndarray]:
        if self.manifest.runtime.image is None:
            return {"proprio": proprio}
        ids, mask = self.inputs.tokens(obs.instruction)
        feed = {"images": self.inputs.images(obs), "input_ids": ids, "attention_mask": mask}
        if self.manifest.runtime.proprio_delta_std is not None:
            feed.update(proprio=proprio, proprio_delta=self.inputs.proprio_delta(obs))
        return feed

    def infer(self, obs: Observation) -> ActionChunk:
        proprio = self.inputs.proprio(obs)
        bridge = self.condition(self._backbone_feed(obs, proprio))
        noise = self._rng.standard_normal(self._noise_shape).astype(np.float32)
        prefix = None
        if self._prefix_score_weight is not None and obs.prefix is not None:
            horizon = self._noise_shape[2]
            prefix = np.clip(self.inputs.to_normalized(obs.prefix[:horizon]), -1.0, 1.0).astype(np.float32)
        chunk, index, scores, context, *gripper_logits = self.head(
            bridge, proprio, noise, prefix, self._prefix_score_weight or 0.0
        )
        return ActionChunk(
            t_obs_ns=obs.t_ns,
            dt_ns=self.dt_ns,
            channels=self.channels,
            actions=self.inputs.to_si(chunk[0]),
            anchor_index=int(index[0]) if self._anchored else None,
            scores=np.asarray(scores[0]) if self._anchored else None,
            context=context,
            gripper=self._gripper_plan(gripper_logits),
        )

    def _gripper_plan(self, outputs: list[np.ndarray]) -> GripperPlan | None:
        spec = self.manifest.runtime.gripper
        if spec is None:
            return None
        return GripperPlan(
            spec.channel,
            np.asarray(outputs[0][0], np.float64),
            spec.margin,
            spec.closed_value,
            spec.open_value,
        )

    def residual(
        self, obs: Observation, chunk: ActionChunk, j: int, planned: np.ndarray
    ) -> np.ndarray | None:
        if not self._has_residual or chunk.context is None:
            return None
        proprio = self.inputs.proprio(obs)
        planned_norm = self.inputs.to_normalized(planned).astype(np.float32)[None]
        return self.inputs.correction_to_si(
            self.residual_normalized(proprio, chunk.context, planned_norm, j)[0]
        )

    def warmup(self) -> None:
        spec = self.manifest.runtime
        proprio = np.zeros((1, len(spec.proprio_layout)), np.float32)
        if spec.image is not None:
            ids, mask = self.inputs.tokens("")
            shape = (1, spec.image.images_per_observation, 3, spec.image.size, spec.image.size)
            feed = {"images": np.zeros(shape, np.float32), "input_ids": ids, "attention_mask": mask}
            if spec.proprio_delta_std is not None:
                feed.update(proprio=proprio, proprio_delta=np.zeros_like(proprio))
        else:
            feed = {"proprio": proprio}
        context = self.head(self.condition(feed), proprio, np.zeros(self._noise_shape, np.float32))[3]
        if self._has_residual:
            self.residual_normalized(proprio, context, np.zeros((1, len(self.channels)), np.float32), 0)

    def close(self) -> None:
        pass
