"""Can this host run the sniffer? Checked in the parent, without loading scapy."""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

CAP_NET_RAW = 13


def has_net_raw(status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process's effective capabilities include CAP_NET_RAW."""
    try:
        text = status.read_text(encoding="ascii")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    return False


def why_not() -> str | None:
    """Why the sniffer cannot run here ("not Linux", "no CAP_NET_RAW", "libpcap not found"),
    or None when it can."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if not has_net_raw():
        return "no CAP_NET_RAW"
    # scapy finds libpcap the same way; without it, no BPF filter can be compiled.
    if ctypes.util.find_library("pcap") is None:
        return "libpcap not found"
    return None
