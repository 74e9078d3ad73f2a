"""The Go2's remote as the operator's hand-held e-stop: L2+B latches the e-stop, L1+A pauses or resumes.

The Go2 driver reads the remote at the start of each fast-loop tick (`read_state`) and calls its remote listeners
with each combination pressed (drivers/unitree/remote.py), so the tick that sees the press already holds the arm
and leaves the base to the e-stop sequence, whose Move 0 goes out at once. The e-stop stays latched until the
operator's `anchorvla ctl reset-fault`; L1+A cannot resume past it.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol, runtime_checkable

from anchorvla.errors import UserError
from drivers.unitree.remote import ESTOP, PAUSE_RESUME, describe
from onboard.journal import event

log = logging.getLogger("anchorvla.remote")


@runtime_checkable
class RemoteSource(Protocol):
    """A base whose driver reads a hand-held remote and calls these with each combination pressed."""

    remote_listeners: list


class RemoteButtons:
    """Applies the remote's combinations to a Runtime (its estop, pause and resume)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.presses: list[str] = []

    def __call__(self, press: str) -> None:
        self.presses.append(press)
        runtime = self.runtime
        if press == ESTOP:
            reason = f"Go2 remote {describe(ESTOP)}"
            event(log, logging.WARNING, "remote command", command="estop", buttons=describe(ESTOP))
            sequence = runtime.estop(reason)
            if sequence is not None:  # the device part, when the runtime leaves it to the caller: off the tick
                threading.Thread(target=sequence, name="remote-estop", daemon=True).start()
        elif press == PAUSE_RESUME:
            command = "resume" if runtime.fast.paused else "pause"
            try:
                runtime.resume() if command == "resume" else runtime.pause()
            except UserError as exc:  # a latched fault: only the operator's reset-fault clears it
                event(log, logging.WARNING, "remote command refused", command=command, reason=str(exc))
                return
            event(log, logging.INFO, "remote command", command=command, buttons=describe(PAUSE_RESUME))


def attach_remote_buttons(runtime) -> RemoteButtons | None:
    """Listen to the base's remote when it has one and `robot.base.remote_buttons` is on."""
    base = runtime.devices.base
    if not runtime.config.robot.base.remote_buttons or not isinstance(base, RemoteSource):
        return None
    buttons = RemoteButtons(runtime)
    base.remote_listeners.append(buttons)
    return buttons
