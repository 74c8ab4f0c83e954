"""The portable bypass baseline: sockets whose remote end is DoT, DoQ, a public DoH resolver,
or DNS anywhere but the servers we allow."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from agent.laptop.activity.findings import BypassFinding, classify_flow, plain_address
from agent.laptop.activity.host import Connection
from agent.laptop.data import encrypted_dns_ips


def connection_findings(
    conns: Iterable[Connection],
    *,
    allowed: Collection[str],
    name_of: Callable[[int | None], str | None],
) -> list[BypassFinding]:
    """A finding for each connection that goes round the filter; `allowed` holds plain
    addresses (see findings.allowed_set), `name_of` names a pid's process."""
    doh = encrypted_dns_ips().contains
    out = []
    for conn in conns:
        remote = plain_address(conn.remote)
        method = classify_flow(conn.proto, remote, conn.port, allowed=allowed, doh=doh)
        if method is None:
            continue
        detail: dict[str, str | int] = {"source": "connections"}
        if conn.pid is not None:
            detail["pid"] = conn.pid
        out.append(BypassFinding(method, remote, conn.port, conn.proto, name_of(conn.pid), detail))
    return out
