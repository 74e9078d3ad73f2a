"""Hysteresis on AnchorRefine's discrete gripper decision, in the fast loop.

Each tick reads the logit of the action it runs (positive: closed) and the chunk's learned margin. The decision
switches to closed only when the logit rises above +margin and back to open only when it falls below -margin, so a
logit wandering around the boundary does not make the gripper chatter. The first decision of an episode takes the
logit's sign; a non-finite logit never switches (and, before any decision, gives none).
"""

from __future__ import annotations

import math


class GripperHysteresis:
    def __init__(self) -> None:
        self.closed: bool | None = None  # None: no decision yet this episode

    def reset(self) -> None:
        """A new episode: the next logit decides afresh."""
        self.closed = None

    def update(self, logit: float, margin: float) -> bool | None:
        """The decision for this tick: True closed, False open, None when there is none yet."""
        if not math.isfinite(logit):
            return self.closed
        if self.closed is None:
            self.closed = logit > 0
        elif self.closed and logit < -margin:
            self.closed = False
        elif not self.closed and logit > margin:
            self.closed = True
        return self.closed
