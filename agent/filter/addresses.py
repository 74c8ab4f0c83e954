"""Addresses as configs write them: `IP:PORT` endpoints and upstream resolvers
(`9.9.9.9`, `tls://9.9.9.9:853#dns.quad9.net`). Shared by hedgerow-dns and the laptop agent."""

from __future__ import annotations

import ipaddress

from agent.filter.spec import Endpoint, UpstreamServer


def parse_endpoint(text: str) -> Endpoint:
    """'1.2.3.4:53' or '[::1]:53' (an IP literal, not a host name); raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("must be IP:PORT or [IPv6]:PORT with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:53")
    ipaddress.ip_address(host)
    return Endpoint(host, int(port_text), text)


def parse_upstream(text: str) -> UpstreamServer:
    """'IP:PORT' (plain DNS) or 'tls://IP[:PORT][#TLS-NAME]' (DNS over TLS, port 853 unless
    given); raises ValueError. Host names are not resolved here: see split_upstream_name."""
    tls = text.startswith("tls://")
    rest = text[len("tls://") :] if tls else text
    rest, _, server_name = rest.partition("#")
    if tls and rest.rpartition(":")[1] == "":
        rest += ":853"
    endpoint = parse_endpoint(rest)
    return UpstreamServer(endpoint.host, endpoint.port, tls, server_name or None, text)


def split_upstream_name(text: str) -> tuple[str, int] | None:
    """For 'tls://dns.quad9.net[:853]' (a host name, not an IP): (name, port); else None."""
    if not text.startswith("tls://"):
        return None
    rest = text[len("tls://") :]
    if "#" in rest or "[" in rest:
        return None
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, "853"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(labels) < 2 or not all(label and len(label) < 64 for label in labels):
        return None
    return host.rstrip(".").lower(), int(port_text)
