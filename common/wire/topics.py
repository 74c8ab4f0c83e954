"""MQTT topic names (docs/protocol.md, "Topics"). Only ids that pass valid_name() go in topics."""

from __future__ import annotations

from dataclasses import dataclass

from common.wire.header import Kind, valid_name

ROOT = "hedgerow/v1"
UP_KINDS = {Kind.SUMMARY: "summary", Kind.EVENT: "event", Kind.HEARTBEAT: "heartbeat"}
_BY_NAME = {name: kind for kind, name in UP_KINDS.items()}


def up(site: str, device: str, kind: Kind) -> str:
    """Where a device publishes its reports: hedgerow/v1/<site>/<device>/<kind>."""
    return f"{ROOT}/{site}/{device}/{UP_KINDS[kind]}"


def up_filter(site: str = "+") -> str:
    """Subscription covering every device report (of one site, or of all with "+")."""
    return f"{ROOT}/{site}/+/+"


def device_policy(site: str, device: str) -> str:
    """Retained, signed policy for one device."""
    return f"{ROOT}/{site}/{device}/policy"


def site_policy(site: str) -> str:
    """Retained, signed policy for a whole site."""
    return f"{ROOT}/{site}/policy"


def hub_keys() -> str:
    """Retained, hub-signed document of the hub's public keys (read before enrolment)."""
    return f"{ROOT}/hub/keys"


def enroll_request(request_id: str) -> str:
    """Where a new device sends its sealed enrolment request."""
    return f"{ROOT}/enroll/{request_id}/request"


def enroll_reply(request_id: str) -> str:
    """Where the hub answers that request."""
    return f"{ROOT}/enroll/{request_id}/reply"


@dataclass(frozen=True, slots=True)
class UpTopic:
    """A parsed report topic."""

    site: str
    device: str
    kind: Kind


def parse_up(topic: str) -> UpTopic | None:
    """Parse hedgerow/v1/<site>/<device>/<kind>; None if it is not a report topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != ROOT:
        return None
    site, device, name = parts[2:]
    kind = _BY_NAME.get(name)
    if kind is None or not valid_name(site) or not valid_name(device):
        return None
    return UpTopic(site, device, kind)
