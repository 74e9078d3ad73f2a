"""Cyclone DDS configuration from a network interface name, and participants built with it.

On `lo` (tests, emulators, benchmarks) traffic stays on loopback: multicast off, one unicast peer
127.0.0.1. On any other interface (the one wired to the Go2, often eth0 on 192.168.123.x) the config
pins that interface and keeps multicast discovery, as the vendor SDK does.

The config is handed to Cyclone through a `Domain` object, so it applies whatever CYCLONEDDS_URI says;
one `Domain` per domain id per process (Cyclone allows no second one), shared by reference count.
"""

from __future__ import annotations

import threading
from xml.sax.saxutils import quoteattr

from cyclonedds.core import DDSException
from cyclonedds.domain import Domain, DomainParticipant

from anchorvla.errors import UserError

LOOPBACK_INTERFACE = "lo"
LOOPBACK_PEER = "127.0.0.1"


def dds_config_xml(interface: str) -> str:
    """The Cyclone DDS XML config for `interface` ('lo': loopback only, multicast off, peer 127.0.0.1)."""
    if not interface or any(c.isspace() for c in interface):
        raise UserError(
            f"robot.base.interface: '{interface}' is not a network interface name (e.g. eth0, or lo)"
        )
    general = f"<Interfaces><NetworkInterface name={quoteattr(interface)}/></Interfaces>"
    discovery = "<ParticipantIndex>auto</ParticipantIndex>"
    if interface == LOOPBACK_INTERFACE:
        general += "<AllowMulticast>false</AllowMulticast>"
        discovery += f'<Peers><Peer address="{LOOPBACK_PEER}"/></Peers>'
    return (
        '<CycloneDDS><Domain id="any">'
        f"<General>{general}</General><Discovery>{discovery}</Discovery>"
        "</Domain></CycloneDDS>"
    )


_domains: dict[int, tuple[Domain, str, int]] = {}  # domain id -> (domain, interface, users)
_domains_lock = threading.Lock()


class Participant:
    """A DomainParticipant on `domain_id` configured for `interface`. `close()` releases it."""

    def __init__(self, interface: str, domain_id: int):
        self.interface, self.domain_id = interface, domain_id
        with _domains_lock:
            entry = _domains.get(domain_id)
            if entry is not None and entry[1] != interface:
                raise UserError(
                    f"DDS domain {domain_id} is already open on interface '{entry[1]}' in this process; "
                    f"cannot open it on '{interface}' too (use one interface per domain)"
                )
            try:
                domain = entry[0] if entry else Domain(domain_id, dds_config_xml(interface))
                self.dp = DomainParticipant(domain_id)
            except DDSException as exc:
                raise UserError(
                    f"cannot start DDS on interface '{interface}', domain {domain_id}: {exc} "
                    "(check robot.base.interface names an interface that is up: `ip link`)"
                ) from None
            _domains[domain_id] = (domain, interface, (entry[2] if entry else 0) + 1)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _domains_lock:
            self.dp.__del__()  # dds_delete: the participant and every reader/writer/topic under it
            domain, interface, users = _domains[self.domain_id]
            if users <= 1:
                del _domains[self.domain_id]
                domain.__del__()
            else:
                _domains[self.domain_id] = (domain, interface, users - 1)


def queue_qos(depth: int = 64):
    """QoS for the RPC readers: keep the last `depth` samples, not only the newest (Cyclone's default is
    keep-last 1, which loses one of two replies or requests that arrive between two takes). History is a
    local policy: it matches the vendor's endpoints whatever they use."""
    from cyclonedds.qos import Policy, Qos

    return Qos(Policy.History.KeepLast(depth))
