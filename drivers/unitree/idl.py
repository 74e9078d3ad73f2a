"""The vendor's IDL types, field for field, on the PyPI `cyclonedds` package.

Type names and field order are those of `unitree_sdk2py` (unitree_api::msg::dds_ and
unitree_go::msg::dds_): a reader or writer built from these classes matches the vendor SDK's endpoints
on the same topic, and the robot's. All structs are final with sequential member ids, as the vendor's.
"""

# No `from __future__ import annotations`: cyclonedds resolves the field annotations at run time.

from dataclasses import dataclass, field

import cyclonedds.idl as idl
import cyclonedds.idl.annotations as annotate
import cyclonedds.idl.types as types

# --- unitree_api::msg::dds_ : the request/response envelope of every vendor RPC service ---


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestIdentity_(idl.IdlStruct, typename="unitree_api::msg::dds_::RequestIdentity_"):
    id: types.int64 = 0
    api_id: types.int64 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestLease_(idl.IdlStruct, typename="unitree_api::msg::dds_::RequestLease_"):
    id: types.int64 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestPolicy_(idl.IdlStruct, typename="unitree_api::msg::dds_::RequestPolicy_"):
    priority: types.int32 = 0
    noreply: bool = False


@dataclass
@annotate.final
@annotate.autoid("sequential")
class RequestHeader_(idl.IdlStruct, typename="unitree_api::msg::dds_::RequestHeader_"):
    identity: RequestIdentity_ = field(default_factory=RequestIdentity_)
    lease: RequestLease_ = field(default_factory=RequestLease_)
    policy: RequestPolicy_ = field(default_factory=RequestPolicy_)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class Request_(idl.IdlStruct, typename="unitree_api::msg::dds_::Request_"):
    header: RequestHeader_ = field(default_factory=RequestHeader_)
    parameter: str = ""  # JSON
    binary: types.sequence[types.uint8] = field(default_factory=list)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class ResponseStatus_(idl.IdlStruct, typename="unitree_api::msg::dds_::ResponseStatus_"):
    code: types.int32 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class ResponseHeader_(idl.IdlStruct, typename="unitree_api::msg::dds_::ResponseHeader_"):
    identity: RequestIdentity_ = field(default_factory=RequestIdentity_)  # echoed from the request
    status: ResponseStatus_ = field(default_factory=ResponseStatus_)


@dataclass
@annotate.final
@annotate.autoid("sequential")
class Response_(idl.IdlStruct, typename="unitree_api::msg::dds_::Response_"):
    header: ResponseHeader_ = field(default_factory=ResponseHeader_)
    data: str = ""
    binary: types.sequence[types.uint8] = field(default_factory=list)


# --- unitree_go::msg::dds_ : the sport-mode state ---


@dataclass
@annotate.final
@annotate.autoid("sequential")
class TimeSpec_(idl.IdlStruct, typename="unitree_go::msg::dds_::TimeSpec_"):
    sec: types.int32 = 0
    nanosec: types.uint32 = 0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class IMUState_(idl.IdlStruct, typename="unitree_go::msg::dds_::IMUState_"):
    quaternion: types.array[types.float32, 4] = field(
        default_factory=lambda: [1.0, 0.0, 0.0, 0.0]
    )  # w, x, y, z
    gyroscope: types.array[types.float32, 3] = field(default_factory=lambda: [0.0] * 3)  # rad/s
    accelerometer: types.array[types.float32, 3] = field(default_factory=lambda: [0.0] * 3)  # m/s^2
    rpy: types.array[types.float32, 3] = field(default_factory=lambda: [0.0] * 3)  # rad
    temperature: types.uint8 = 0  # deg C


@dataclass
@annotate.final
@annotate.autoid("sequential")
class PathPoint_(idl.IdlStruct, typename="unitree_go::msg::dds_::PathPoint_"):
    t_from_start: types.float32 = 0.0
    x: types.float32 = 0.0
    y: types.float32 = 0.0
    yaw: types.float32 = 0.0
    vx: types.float32 = 0.0
    vy: types.float32 = 0.0
    vyaw: types.float32 = 0.0


@dataclass
@annotate.final
@annotate.autoid("sequential")
class SportModeState_(idl.IdlStruct, typename="unitree_go::msg::dds_::SportModeState_"):
    stamp: TimeSpec_ = field(default_factory=TimeSpec_)
    error_code: types.uint32 = 0
    imu_state: IMUState_ = field(default_factory=IMUState_)
    mode: types.uint8 = 0
    progress: types.float32 = 0.0
    gait_type: types.uint8 = 0
    foot_raise_height: types.float32 = 0.0
    position: types.array[types.float32, 3] = field(default_factory=lambda: [0.0] * 3)  # odometry frame, m
    body_height: types.float32 = 0.0
    velocity: types.array[types.float32, 3] = field(default_factory=lambda: [0.0] * 3)  # body frame, m/s
    yaw_speed: types.float32 = 0.0
    range_obstacle: types.array[types.float32, 4] = field(default_factory=lambda: [0.0] * 4)
    foot_force: types.array[types.int16, 4] = field(default_factory=lambda: [0] * 4)
    foot_position_body: types.array[types.float32, 12] = field(default_factory=lambda: [0.0] * 12)
    foot_speed_body: types.array[types.float32, 12] = field(default_factory=lambda: [0.0] * 12)
    path_point: types.array[PathPoint_, 10] = field(default_factory=lambda: [PathPoint_() for _ in range(10)])


# --- unitree_go::msg::dds_ : the wireless remote (drivers/unitree/remote.py reads it) ---


@dataclass
@annotate.final
@annotate.autoid("sequential")
class WirelessController_(idl.IdlStruct, typename="unitree_go::msg::dds_::WirelessController_"):
    lx: types.float32 = 0.0  # left stick, -1..1
    ly: types.float32 = 0.0
    rx: types.float32 = 0.0  # right stick, -1..1
    ry: types.float32 = 0.0
    keys: types.uint16 = 0  # one bit per key (remote.KEY_BITS)
