"""The sport RPC client: requests on rt/api/sport/request, replies on rt/api/sport/response matched by
request id.

`move()` is a noreply write: it returns as soon as Cyclone has put the sample on the wire and never waits
for the robot. `call()` (StandUp, BalanceStand, StopMove, ...) waits for the reply on a `threading.Event`
for at most its timeout; it is for start-up and shutdown, never for the fast loop. Replies arrive on
Cyclone's listener thread.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time

from cyclonedds.core import DDSException, Listener
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from drivers.errors import DeviceError
from drivers.unitree import sport_api as api
from drivers.unitree.dds_config import Participant
from drivers.unitree.idl import (
    Request_,
    RequestHeader_,
    RequestIdentity_,
    RequestLease_,
    RequestPolicy_,
    Response_,
)


def clamp_move(vx: float, vy: float, wz: float) -> tuple[float, float, float]:
    """Clip a body-frame velocity to the vendor's Move limits."""
    return (
        min(max(vx, api.VX_RANGE[0]), api.VX_RANGE[1]),
        min(max(vy, api.VY_RANGE[0]), api.VY_RANGE[1]),
        min(max(wz, api.VYAW_RANGE[0]), api.VYAW_RANGE[1]),
    )


class _Pending:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.response: Response_ | None = None


class SportClient:
    """Sport-service RPC over one participant. `where` names the link in error messages."""

    def __init__(self, participant: Participant, where: str):
        self.where = where
        dp = participant.dp
        self._writer = DataWriter(dp, Topic(dp, api.TOPIC_REQUEST, Request_))
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._reader = DataReader(
            dp,
            Topic(dp, api.TOPIC_RESPONSE, Response_),
            listener=Listener(on_data_available=self._on_responses),
        )
        # Ids are unique per client and across restarts (the vendor SDK uses monotonic_ns the same way).
        self._ids = itertools.count(time.monotonic_ns())
        self.last_move_id = 0

    # --- replies (Cyclone listener thread) ---

    def _on_responses(self, reader: DataReader) -> None:
        for response in reader.take(64):
            if isinstance(response, InvalidSample):
                continue
            with self._lock:
                pending = self._pending.get(response.header.identity.id)
            if pending is not None:  # replies to other clients' requests share the topic: ignore them
                pending.response = response
                pending.event.set()

    # --- requests ---

    def _request(self, api_id: int, parameter: str, noreply: bool) -> Request_:
        identity = RequestIdentity_(next(self._ids), api_id)
        return Request_(RequestHeader_(identity, RequestLease_(0), RequestPolicy_(0, noreply)), parameter, [])

    def wait_matched(self, timeout_s: float) -> bool:
        """Wait until the robot's request reader has matched our writer (so a request is not lost)."""
        end = time.monotonic() + timeout_s
        while not self._writer.get_matched_subscriptions():
            if time.monotonic() >= end:
                return False
            time.sleep(0.002)
        return True

    def move(self, vx: float, vy: float, wz: float) -> int:
        """Send Move (noreply), clipped to the vendor limits. Returns the request id. Never waits."""
        if not (math.isfinite(vx) and math.isfinite(vy) and math.isfinite(wz)):
            raise DeviceError(f"Go2 Move refused: non-finite velocity ({vx}, {vy}, {wz})")
        vx, vy, wz = clamp_move(vx, vy, wz)
        request = self._request(api.MOVE, json.dumps({"x": vx, "y": vy, "z": wz}), noreply=True)
        try:
            self._writer.write(request)
        except DDSException as exc:
            raise DeviceError(f"Go2 Move could not be sent on {self.where}: {exc}") from None
        self.last_move_id = request.header.identity.id
        return self.last_move_id

    def call(self, api_id: int, parameter: str = "{}", timeout_s: float = 0.5) -> tuple[int, str]:
        """Send a request and wait at most `timeout_s` for its reply: (status code, data).

        A missing reply returns (ERR_TIMEOUT, ""); a request with no matched reader (ERR_SEND_FAILED, "").
        """
        if not self._writer.get_matched_subscriptions():
            return api.ERR_SEND_FAILED, ""
        request = self._request(api_id, parameter, noreply=False)
        request_id = request.header.identity.id
        pending = _Pending()
        with self._lock:
            self._pending[request_id] = pending
        try:
            self._writer.write(request)
            if not pending.event.wait(timeout_s):
                return api.ERR_TIMEOUT, ""
        except DDSException:
            return api.ERR_SEND_FAILED, ""
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        response = pending.response
        return response.header.status.code, response.data

    def call_ok(self, api_id: int, parameter: str = "{}", timeout_s: float = 0.5) -> str:
        """`call`, raising DeviceError unless the robot answered code 0."""
        code, data = self.call(api_id, parameter, timeout_s)
        if code != api.OK:
            name = api.API_NAMES.get(api_id, str(api_id))
            raise DeviceError(f"Go2 {name} failed on {self.where}: {api.describe_code(code)}")
        return data
