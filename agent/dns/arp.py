"""Best-effort IP-to-MAC lookup from the kernel's ARP table (/proc/net/arp).

Only clients on the Pi's own link appear there; routed clients, IPv6 and non-Linux systems give
nothing, and that is fine: the MAC is optional in a summary.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

ARP_PATH = Path("/proc/net/arp")
_INCOMPLETE = "00:00:00:00:00:00"


# What the payload schema takes as a MAC address; the lease parsers and [clients] use it too.
MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def read_arp(path: Path = ARP_PATH) -> dict[str, str]:
    """Map IPv4 address to MAC for complete ARP entries; {} if the table cannot be read."""
    try:
        lines = Path(path).read_text("ascii", errors="replace").splitlines()
    except OSError as exc:
        log.debug("no ARP table at %s: %s", path, exc)
        return {}
    table: dict[str, str] = {}
    for line in lines[1:]:  # the first line is the column header
        fields = line.split()
        if len(fields) < 4:
            continue
        ip, _hw_type, flags, mac = fields[:4]
        try:
            complete = int(flags, 16) & 0x2
        except ValueError:
            continue
        if complete and mac != _INCOMPLETE and MAC.fullmatch(mac.lower()):
            table[ip] = mac.lower()
    return table
