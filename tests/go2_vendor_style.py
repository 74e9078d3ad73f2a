"""Request/response types declared the way the vendor's generated modules declare them (dotted type names,
`unitree_api.msg.dds_.X`), written independently from the field lists in FACTS.md. A process using these
must talk to our emulator: the wire names and layouts are the same. Used by test_go2_loopback."""

# No `from __future__ import annotations`: cyclonedds resolves the annotations at run time.
from dataclasses import dataclass

import cyclonedds.idl as idl
import cyclonedds.idl.annotations as annotate
import cyclonedds.idl.types as types


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestIdentity_(idl.IdlStruct, typename="unitree_api.msg.dds_.RequestIdentity_"):
    id: types.int64
    api_id: types.int64


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestLease_(idl.IdlStruct, typename="unitree_api.msg.dds_.RequestLease_"):
    id: types.int64


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestPolicy_(idl.IdlStruct, typename="unitree_api.msg.dds_.RequestPolicy_"):
    priority: types.int32
    noreply: bool


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestHeader_(idl.IdlStruct, typename="unitree_api.msg.dds_.RequestHeader_"):
    identity: RequestIdentity_
    lease: RequestLease_
    policy: RequestPolicy_


@dataclass
@annotate.final
@annotate.autoid("sequential")
class Request_(idl.IdlStruct, typename="unitree_api.msg.dds_.Request_"):
    header: RequestHeader_
    parameter: str
    binary: types.sequence[types.uint8]


@dataclass
@annotate.final
@annotate.autoid("sequential")
class ResponseStatus_(idl.IdlStruct, typename="unitree_api.msg.dds_.ResponseStatus_"):
    code: types.int32


@dataclass
@annotate.final
@annotate.autoid("sequential")
class ResponseHeader_(idl.IdlStruct, typename="unitree_api.msg.dds_.ResponseHeader_"):
    identity: RequestIdentity_
    status: ResponseStatus_


@dataclass
@annotate.final
@annotate.autoid("sequential")
class Response_(idl.IdlStruct, typename="unitree_api.msg.dds_.Response_"):
    header: ResponseHeader_
    data: str
    binary: types.sequence[types.uint8]


def call_stand_up(domain_id: int, result_queue) -> None:
    """In a child process: a vendor-style client asks StandUp (id 1004) and reports the reply's code."""
    import time

    from cyclonedds.domain import DomainParticipant
    from cyclonedds.pub import DataWriter
    from cyclonedds.sub import DataReader
    from cyclonedds.topic import Topic

    dp = DomainParticipant(
        domain_id
    )  # configured by CYCLONEDDS_URI (loopback), as the vendor SDK's env would be
    writer = DataWriter(dp, Topic(dp, "rt/api/sport/request", Request_))
    reader = DataReader(dp, Topic(dp, "rt/api/sport/response", Response_))
    end = time.monotonic() + 10.0
    request_id = time.monotonic_ns()
    while time.monotonic() < end:
        if writer.get_matched_subscriptions():
            header = RequestHeader_(
                RequestIdentity_(request_id, 1004), RequestLease_(0), RequestPolicy_(0, False)
            )
            writer.write(Request_(header, "{}", []))
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                for response in reader.take(16):
                    if getattr(response, "header", None) and response.header.identity.id == request_id:
                        result_queue.put(response.header.status.code)
                        return
                time.sleep(0.005)
            request_id += 1
        time.sleep(0.01)
    result_queue.put(None)
