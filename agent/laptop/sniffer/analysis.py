"""What a sniffed packet means for the filter: a bypass finding or nothing (no scapy here)."""

from __future__ import annotations

from collections.abc import Collection

from agent.laptop.activity.findings import (
    DNS_PORT,
    DOQ_PORTS,
    DOT_PORT,
    BypassFinding,
    allowed_set,
    classify_flow,
    plain_address,
)
from agent.laptop.sniffer.observed import Observed

_SERVICE_PORTS = frozenset({DNS_PORT, DOT_PORT, *DOQ_PORTS})


def analyse(obs: Observed, allowed_dns: Collection[str]) -> BypassFinding | None:
    """The bypass a packet shows: DNS to a server not allowed (dns_elsewhere, with the question
    name), DoT (dot, with the TLS server name when this is the ClientHello), DoQ (doq); None
    for anything else, including packets to allowed servers and their replies."""
    if obs.dport not in _SERVICE_PORTS:
        return None  # a reply (or a client on port 53 talking to itself): the query is what counts
    remote = plain_address(obs.dst)
    method = classify_flow(
        obs.proto, remote, obs.dport, allowed=allowed_set(allowed_dns), doh=lambda _: False
    )
    if method is None:
        return None
    detail: dict[str, str | int] = {"source": "sniffer", "src": plain_address(obs.src)}
    if obs.qname is not None:
        detail["qname"] = obs.qname
    if obs.tls_sni is not None:
        detail["sni"] = obs.tls_sni
    return BypassFinding(method, remote, obs.dport, obs.proto, None, detail)
