"""The words of alert summaries: sentences a safeguarding lead can read, without pupil names.

A laptop is named by its enrolled id. A DNS client is named by its device name where the filter
knew one (`client.hostname`: the school's static table or DHCP lease, e.g. lt-042), with its
address and filtering group; a laptop agent's `user` is never used, it may be a pupil's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from common.categories import lookup
from hub.model import StoredReport
from hub.rules.hours import local_time

MAX_HOSTNAME = 63  # what an alert sentence shows of a client's device name

_CLASS_NAMES = {
    "pupil-laptop": "Pupil laptop",
    "staff-laptop": "Staff laptop",
    "sinkhole": "DNS filter",
}
# What the laptop agent's "bypass" events name that is not a category of the shared
# vocabulary (common/categories.py names those).
_METHOD_NAMES = {
    "hardcoded_dns": "a hard-coded DNS server",
    "doq": "DNS-over-QUIC",
    "dns_elsewhere": "plain DNS to a server other than the filter",
    "flagged_app": "a flagged app (a VPN client, Tor or a proxy)",
    "tunnel": "a tunnel (a VPN interface such as tun or wg)",
}


def device_label(site: str, device: str, device_class: str | None) -> str:
    """E.g. "Pupil laptop cape-primary/lt-042"."""
    return f"{_CLASS_NAMES.get(device_class or '', 'Device')} {site}/{device}"


def client_of(report: StoredReport) -> dict[str, Any] | None:
    """The DNS client a sinkhole's report is about, if it names one."""
    client = report.payload.get("client")
    if report.device_class == "sinkhole" and isinstance(client, dict):
        return client
    return None


def who(report: StoredReport) -> str:
    """The subject of a sentence about this report: the laptop, or the client behind the Pi."""
    label = device_label(report.site, report.device, report.device_class)
    client = client_of(report)
    if client is None:
        return label
    group = client.get("group")
    ip = client.get("ip", "an unknown address")
    hostname = client.get("hostname")
    if isinstance(hostname, str) and hostname.strip():
        # The payload schema already refused control and bidi characters in it (common/text.py).
        where = f"{ip}, group {group}" if isinstance(group, str) and group else f"{ip}"
        return f"{hostname.strip()[:MAX_HOSTNAME]} ({where}) behind {label}"
    in_group = f" (group {group})" if isinstance(group, str) and group else ""
    return f"A device at {ip}{in_group} behind {label}"


def group_of(report: StoredReport) -> str | None:
    """The filtering group an alert belongs to: the DNS client's, else the device's."""
    client = client_of(report)
    if client is not None and isinstance(client.get("group"), str):
        return str(client["group"])
    return report.group


def client_name(client: Mapping[str, Any] | None) -> str | None:
    """A DNS client's device name as the hub groups by it (stripped, lower case, no trailing
    dot: DHCP names are case-blind), or None when the filter knew none."""
    hostname = client.get("hostname") if client is not None else None
    if not isinstance(hostname, str):
        return None
    name = hostname.replace("\x00", "").strip().rstrip(".").lower()
    return name or None


def client_identity(client: Mapping[str, Any] | None) -> str | None:
    """Whose attempts a DNS client's are: "name:<device name>", else "mac:<MAC>", else its
    address as sent (the grouping of a client without a name is unchanged); None without any."""
    name = client_name(client)
    if name is not None:
        return f"name:{name}"
    if client is None:
        return None
    mac = client.get("mac")
    if isinstance(mac, str) and mac.strip():
        return "mac:" + mac.replace("\x00", "").strip().lower().replace("-", ":")
    ip = client.get("ip")
    return ip.replace("\x00", "") if isinstance(ip, str) and ip else None


def client_key(report: StoredReport) -> str:
    """The dedup-key suffix that keeps devices behind one Pi apart: "@" and client_identity
    (e.g. "@name:lt-042", "@10.1.2.34" for a client with no name); "" for a laptop."""
    client = client_of(report)
    if client is None:
        return ""
    return f"@{client_identity(client) or '?'}"


def category_label(category: str) -> str:
    """E.g. "self-harm", "social network": the shared vocabulary's words for a category (or an
    alias of one), else the name with spaces."""
    shared = lookup(category)
    if shared is not None:
        return shared.said
    return _METHOD_NAMES.get(category, category.replace("_", " "))


def event_time(report: StoredReport) -> int:
    """When an event happened: its `at` (device clock), else when it was sealed."""
    at = report.payload.get("at")
    return at if type(at) is int and at > 0 else report.time_ms


def clock(ms: int, zone: ZoneInfo) -> str:
    """School-local time of day, e.g. "23:14"."""
    return local_time(ms, zone).strftime("%H:%M")


def when(ms: int, zone: ZoneInfo) -> str:
    """School-local date and time, e.g. "2025-03-04 23:14"."""
    return local_time(ms, zone).strftime("%Y-%m-%d %H:%M")


def plural(n: int, one: str, many: str) -> str:
    """ "1 time", "3 times"."""
    return f"{n} {one if n == 1 else many}"
