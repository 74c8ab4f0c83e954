"""The default routes, read from /proc/net/route and /proc/net/ipv6_route (no tool, no
library): the network identity needs the gateway, and the polling fallback of the network
watcher compares them."""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC_ROUTE = Path("/proc/net/route")
PROC_IPV6_ROUTE = Path("/proc/net/ipv6_route")
_RTF_UP, _RTF_GATEWAY = 0x1, 0x2


@dataclass(frozen=True, slots=True, order=True)
class DefaultRoute:
    """One default route: IPv4 before IPv6, then the lowest metric first."""

    family: int  # socket.AF_INET or socket.AF_INET6
    metric: int
    device: str
    gateway: str | None  # None: a route onto a device with no next hop (a tunnel)


def parse_ipv4_routes(text: str) -> list[DefaultRoute]:
    """The default routes in the text of /proc/net/route (little-endian hex addresses)."""
    routes: list[DefaultRoute] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        device, destination, gateway, flags_hex, metric, mask = (
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            fields[6],
            fields[7],
        )
        try:
            flags = int(flags_hex, 16)
            if int(destination, 16) or int(mask, 16) or not flags & _RTF_UP:
                continue
            via = (
                socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
                if flags & _RTF_GATEWAY
                else None
            )
            routes.append(DefaultRoute(socket.AF_INET, int(metric), device, via))
        except (ValueError, struct.error):
            continue
    return routes


def parse_ipv6_routes(text: str) -> list[DefaultRoute]:
    """The default routes in the text of /proc/net/ipv6_route (::/0, any table but local)."""
    routes: list[DefaultRoute] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 10:
            continue
        destination, prefix, _, _, next_hop, metric, _, _, flags_hex, device = fields
        try:
            flags = int(flags_hex, 16)
            if int(destination, 16) or int(prefix, 16) or not flags & _RTF_UP:
                continue
            if device == "lo":  # the unreachable default the kernel keeps on lo
                continue
            hop = ipaddress.IPv6Address(bytes.fromhex(next_hop))
            via = None if hop.is_unspecified else str(hop)
            routes.append(DefaultRoute(socket.AF_INET6, int(metric, 16), device, via))
        except ValueError:
            continue
    return routes


def read_proc(path: Path) -> str:
    """A /proc file's text, or "" if it cannot be read."""
    try:
        return path.read_text()
    except OSError as exc:  # not Linux, or /proc not mounted: no routes known
        log.debug("cannot read %s: %s", path, exc)
        return ""


def default_routes() -> list[DefaultRoute]:
    """This namespace's default routes, the preferred one first."""
    return sorted(
        parse_ipv4_routes(read_proc(PROC_ROUTE)) + parse_ipv6_routes(read_proc(PROC_IPV6_ROUTE))
    )
