"""Can this host run the sniffer? Checked in the parent, without loading scapy."""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

CAP_NET_RAW = 13


def _capability_sets(status: Path) -> dict[str, int]:
    try:
        text = status.read_text(encoding="ascii")
    except OSError:
        return {}
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in text.splitlines()
        if line.startswith("Cap") and len(line.split()) == 2
    }


def has_net_raw(status: Path = Path("/proc/self/status")) -> bool:
    """Whether a sniffer child started by this process holds CAP_NET_RAW: it is effective here,
    or permitted here (agent/laptop/caps.py drops it from the agent's effective set; a child
    exec'd as root gets it back in full; one exec'd by any other user does not)."""
    sets = _capability_sets(status)
    if sets.get("CapEff", 0) >> CAP_NET_RAW & 1:
        return True
    return bool(sets.get("CapPrm", 0) >> CAP_NET_RAW & 1) and os.geteuid() == 0


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
