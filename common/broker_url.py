"""The one rule for where a device may send its reports: a broker URL is mqtts://HOST[:PORT]
anywhere, or plain mqtt:// to a loopback address only (tests, or a broker on the same host).
Reports are sealed end to end either way, but a plaintext link would show an onlooker which
device talks when, and its broker password."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def broker_url_problem(value: str) -> str | None:
    """Why a device's broker URL is refused, or None."""
    url = urlsplit(value)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        return "must be mqtts://HOST[:PORT] (or mqtt://127.0.0.1:PORT on loopback)"
    try:
        url.port  # noqa: B018 (a bad port raises)
    except ValueError:
        return "has a bad port"
    if url.scheme == "mqtts" or url.hostname == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(url.hostname).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else "plain mqtt:// is allowed only on loopback; use mqtts:// (TLS)"
