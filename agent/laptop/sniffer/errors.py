"""The sniffer's exceptions: one root, and the reasons a capture cannot start."""

from __future__ import annotations

from common.errors import HedgerowError


class SnifferError(HedgerowError):
    """The packet sniffer failed."""


class NoLibpcap(SnifferError):
    """libpcap is missing, so no BPF filter can be compiled."""


class NoInterface(SnifferError):
    """The interface to capture on does not exist."""
