"""Real-time scheduling for the controller's threads (Linux).

The event-loop thread (fast loop) runs SCHED_FIFO at `priority`; the inference worker at `priority - 1`, so
it can never delay a tick yet is not preempted by ordinary processes while it holds the GIL (which would
stall the fast loop behind it). Without permission (no CAP_SYS_NICE, no LimitRTPRIO in the unit) it logs
one warning and the controller runs at normal priority.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("anchorvla")


def set_thread_fifo(priority: int) -> bool:
    """Make the calling thread SCHED_FIFO at `priority`; False (and a warning) when not permitted."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except PermissionError:
        log.warning(
            "real-time priority %d not permitted: running at normal priority "
            "(give the service LimitRTPRIO=%d or CAP_SYS_NICE, or set service.realtime_priority: 0)",
            priority,
            priority,
        )
        return False


def set_thread_normal() -> None:
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(PermissionError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def set_affinity(cpus: list[int] | None) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            log.warning("cpu affinity %s not applied: %s", cpus, exc)
