"""The interface every engine implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from policy_runtime.types import ActionChunk, Observation


@runtime_checkable
class PolicyEngine(Protocol):
    channels: tuple[str, ...]  # action layout, by name
    dt_ns: int  # the control period the policy was trained at

    def warmup(self) -> None:
        """Load and run once so the first real call has steady latency."""

    def infer(self, obs: Observation) -> ActionChunk:
        """Backbone + head for one observation. Called from a worker thread, never on the event loop."""

    def residual(
        self, obs: Observation, chunk: ActionChunk, j: int, planned: np.ndarray
    ) -> np.ndarray | None:
        """Correction to add to `planned` (action j of `chunk`) given the current observation, or None when
        the policy has no residual module. Called on the fast loop: must take well under a millisecond."""

    def close(self) -> None: ...
