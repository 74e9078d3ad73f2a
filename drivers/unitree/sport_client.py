"""The sport RPC client: requests on rt/api/sport/request, replies on rt/api/sport/response matched by
request id.

`move()` is a noreply write: it returns as soon as Cyclone has put the sample on the wire and never waits
for the robot. `call()` (StandUp, BalanceStand, StopMove, ...) polls for its reply for at most its timeout;
it is for start-up and shutdown, never for the fast loop.

No DDS listeners here: within one process (an in-process emulator) Cyclone runs a listener in the
writer's thread, and the Python binding writes holding the GIL, so concurrent writers can deadlock.
"""

from __future__ import annotations

import json
import math
import threading
import time

from cyclonedds.core import DDSException
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from anchorvla.errors import DeviceError
from drivers.unitree import sport_api as api
from drivers.unitree.dds_config import Participant, queue_qos
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


class SportClient:
    """Sport-service RPC over one participant. `where` names the link in error messages."""

    def __init__(self, participant: Participant, where: str):
        self.where = where
        dp = participant.dp
        self._writer = DataWriter(dp, Topic(dp, api.TOPIC_REQUEST, Request_))
        self._reader = DataReader(dp, Topic(dp, api.TOPIC_RESPONSE, Response_), qos=queue_qos())
        self._waiting: set[int] = set()  # ids of calls in flight
        self._replies: dict[int, Response_] = {}  # taken by one caller for another
        self._lock = threading.Lock()
        self._last_id = 0

    # --- requests ---

    def _next_id(self) -> int:
        """The monotonic clock in ns, strictly increasing (as the vendor SDK's ids): unique per client, across
        restarts, and apart from other clients' ids."""
        with self._lock:
            self._last_id = max(time.monotonic_ns(), self._last_id + 1)
            return self._last_id

    def _request(self, api_id: int, parameter: str, noreply: bool) -> Request_:
        identity = RequestIdentity_(self._next_id(), api_id)
        return Request_(RequestHeader_(identity, RequestLease_(0), RequestPolicy_(0, noreply)), parameter, [])

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until a request gets its reply: ask the service's API version (read-only) every 50 ms,
        any reply to any of them will do.

        Discovery matches each side on its own: until the robot's reply writer has matched our reader a
        reply would be lost, and no local status shows the remote side's view, so a round trip decides.
        """
        end = time.monotonic() + timeout_s
        sent: list[int] = []
        next_ping = 0.0
        try:
            while (now := time.monotonic()) < end:
                if now >= next_ping and self._writer.get_matched_subscriptions():
                    sent.append(self._send(api.API_VERSION, "{}"))
                    next_ping = now + 0.05
                if self._poll(sent) is not None:
                    return True
                time.sleep(0.001)
            return False
        finally:
            self._forget(sent)

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
        return request.header.identity.id

    def _send(self, api_id: int, parameter: str) -> int:
        """Write a request that wants a reply; returns its id (the caller `_forget`s it when done)."""
        request = self._request(api_id, parameter, noreply=False)
        request_id = request.header.identity.id
        with self._lock:
            self._waiting.add(request_id)
        self._writer.write(request)
        return request_id

    def _poll(self, request_ids: list[int]) -> Response_ | None:
        """The reply to one of `request_ids` if it has arrived (non-blocking)."""
        with self._lock:
            for response in self._reader.take(64):
                if not isinstance(response, InvalidSample) and response.header.identity.id in self._waiting:
                    self._replies[response.header.identity.id] = response
            for request_id in request_ids:
                if request_id in self._replies:
                    return self._replies.pop(request_id)
        return None

    def _forget(self, request_ids: list[int]) -> None:
        with self._lock:
            for request_id in request_ids:
                self._waiting.discard(request_id)
                self._replies.pop(request_id, None)

    def call(self, api_id: int, parameter: str = "{}", timeout_s: float = 0.5) -> tuple[int, str]:
        """Send a request and wait at most `timeout_s` for its reply: (status code, data).

        A missing reply returns (ERR_TIMEOUT, ""); a request with no matched reader (ERR_SEND_FAILED, "").
        """
        if not self._writer.get_matched_subscriptions():
            return api.ERR_SEND_FAILED, ""
        end = time.monotonic() + timeout_s
        ids: list[int] = []
        try:
            ids.append(self._send(api_id, parameter))
            while (response := self._poll(ids)) is None:
                if time.monotonic() >= end:
                    return api.ERR_TIMEOUT, ""
                time.sleep(0.001)
            return response.header.status.code, response.data
        except DDSException:
            return api.ERR_SEND_FAILED, ""
        finally:
            self._forget(ids)

    def call_ok(self, api_id: int, parameter: str = "{}", timeout_s: float = 0.5) -> str:
        """`call`, raising DeviceError unless the robot answered code 0."""
        code, data = self.call(api_id, parameter, timeout_s)
        if code != api.OK:
            name = api.API_NAMES.get(api_id, str(api_id))
            raise DeviceError(f"Go2 {name} failed on {self.where}: {api.describe_code(code)}")
        return data
