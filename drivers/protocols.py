"""The interfaces the runtime drives. Hardware drivers, emulator clients and test stand-ins implement them.

Every call is synchronous and bounded: the fast loop calls `read_state`/`write_goal`/`move` once a tick
on the event-loop thread, so an implementation must return within a fraction of the control period
(timeouts sized from the link, never the vendor's multi-second defaults). A failure raises
`anchorvla.errors.DeviceError`; the runtime reports it to the safety layer.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from drivers.types import ArmState, BaseState, Frame


@runtime_checkable
class Arm(Protocol):
    joint_names: tuple[str, ...]

    def start(self) -> None:
        """Open the link, check the servos against the calibration, enable torque holding the present pose."""

    def read_state(self) -> ArmState: ...

    def write_goal(self, positions: np.ndarray) -> None:
        """Send joint goal positions (rad, layout `joint_names`)."""

    def stop(self) -> None:
        """Close the link. Leaves torque as it is (holding); releasing torque is a safety-sequence decision."""


@runtime_checkable
class Base(Protocol):
    def start(self) -> None:
        """Connect, wait for state, bring the base into a mode that accepts velocity commands."""

    def read_state(self) -> BaseState: ...

    def move(self, vx: float, vy: float, wz: float) -> None:
        """Body-frame velocity command, sent every tick; must not block."""

    def stop_move(self) -> None:
        """Bring the base to a standing stop."""

    def stop(self) -> None: ...


@runtime_checkable
class TorqueRelease(Protocol):
    """An arm whose servos can turn torque off (the park-and-release exit sequence ends with it)."""

    def release_torque(self) -> None:
        """Torque off on every joint: the arm goes limp."""


@runtime_checkable
class Damping(Protocol):
    """A base with a passive damped mode (the e-stop's `damp` option: the Go2 lowers itself, joints soft)."""

    def damp(self) -> None: ...


@runtime_checkable
class Camera(Protocol):
    name: str

    def start(self) -> None: ...

    def latest(self) -> Frame | None:
        """The newest frame, or None before the first one. Never blocks."""

    def stop(self) -> None: ...
