"""Rules for values both the DNS filter's config and the hub's policy settings accept: where a
list may be fetched from, and how a blocked name may be answered. One copy, so hedgerow-dns and
the laptop agent (through the hub's signed policy) take exactly the same values."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

BLOCKED_ANSWERS = ("null", "nxdomain")


def url_problem(source: str) -> str | None:
    """Why a list URL is refused, or None: https anywhere, http only to a loopback address."""
    parts = urlsplit(source)
    if not parts.hostname:
        return "has no host"
    if parts.scheme == "https":
        return None
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else "must be https:// (http:// is allowed only to 127.0.0.0/8 or ::1)"


def blocked_answer_problem(value: str) -> str | None:
    """Why a blocked answer is refused, or None: "null", "nxdomain" or a block page's address."""
    if value in BLOCKED_ANSWERS:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be null, nxdomain or the IP address of a block page"
    return None
