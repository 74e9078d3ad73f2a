"""The vendor's wire types and the DDS config helper (no network)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from anchorvla.errors import UserError
from drivers.unitree import idl
from drivers.unitree.dds_config import dds_config_xml

FACTS_LOOPBACK = (
    '<CycloneDDS><Domain id="any"><General><Interfaces><NetworkInterface name="lo"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    '<Peers><Peer address="127.0.0.1"/></Peers></Discovery></Domain></CycloneDDS>'
)

# Field order of the vendor's types (unitree_sdk2py idl): it is the wire layout.
VENDOR_FIELDS = {
    idl.Request_: ["header", "parameter", "binary"],
    idl.RequestHeader_: ["identity", "lease", "policy"],
    idl.RequestIdentity_: ["id", "api_id"],
    idl.RequestPolicy_: ["priority", "noreply"],
    idl.Response_: ["header", "data", "binary"],
    idl.ResponseHeader_: ["identity", "status"],
    idl.IMUState_: ["quaternion", "gyroscope", "accelerometer", "rpy", "temperature"],
    idl.PathPoint_: ["t_from_start", "x", "y", "yaw", "vx", "vy", "vyaw"],
    idl.SportModeState_: [
        "stamp", "error_code", "imu_state", "mode", "progress", "gait_type", "foot_raise_height", "position",
        "body_height", "velocity", "yaw_speed", "range_obstacle", "foot_force", "foot_position_body",
        "foot_speed_body", "path_point",
    ],
}  # fmt: skip


@pytest.mark.parametrize("cls", list(VENDOR_FIELDS), ids=lambda c: c.__name__)
def test_field_order_and_scoped_type_name(cls):
    assert [f.name for f in dataclasses.fields(cls)] == VENDOR_FIELDS[cls]
    module = "unitree_api" if cls.__name__.startswith(("Request", "Response")) else "unitree_go"
    assert cls.__idl_typename__ == f"{module}::msg::dds_::{cls.__name__}"


def test_sport_mode_state_round_trips_through_cdr():
    s = idl.SportModeState_()
    s.mode, s.position, s.yaw_speed, s.foot_force = 3, [1.5, -2.0, 0.3], 0.25, [10, -20, 30, 40]
    s.path_point[9].vyaw = 0.5
    back = idl.SportModeState_.deserialize(s.serialize())
    assert back.mode == 3 and list(back.position) == [1.5, -2.0, pytest.approx(0.3)]
    assert list(back.foot_force) == [10, -20, 30, 40] and back.path_point[9].vyaw == 0.5


def test_loopback_config_is_the_facts_config():
    canon = lambda text: ET.tostring(ET.fromstring(text))  # noqa: E731
    assert canon(dds_config_xml("lo")) == canon(FACTS_LOOPBACK)


def test_robot_interface_config_pins_the_interface_and_keeps_multicast():
    root = ET.fromstring(dds_config_xml("eth0"))
    assert root.find(".//NetworkInterface").get("name") == "eth0"
    assert root.find(".//AllowMulticast") is None and root.find(".//Peers") is None


@pytest.mark.parametrize("bad", ["", "eth 0"])
def test_bad_interface_name_is_one_clear_line(bad):
    with pytest.raises(UserError, match="robot.base.interface"):
        dds_config_xml(bad)
