"""A bypass finding (one way round the filter, seen once) and the gate that reports each only
once per 10 minutes. Both the psutil baseline and the packet sniffer make these."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

METHODS = ("dot", "doq", "doh", "dns_elsewhere", "flagged_app", "tunnel")
DNS_PORT = 53
DOT_PORT = 853
# DoQ: RFC 9250's 853, plus 8853 and 784, which AdGuard and early drafts used
DOQ_PORTS = frozenset({853, 8853, 784})
HTTPS_PORT = 443
REPEAT_AFTER_S = 600.0


@dataclass(frozen=True, slots=True)
class BypassFinding:
    """One way round the filter: how (`method`), to where, and by which process if known."""

    method: str
    remote: str
    port: int
    proto: str
    process: str | None
    detail: dict[str, str | int] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"bypass method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.proto not in ("tcp", "udp", ""):
            raise ValueError(f"bypass proto {self.proto!r} is not tcp or udp")

    def key(self) -> tuple[str, str, int, str | None]:
        """What makes two findings the same one, for de-duplication."""
        return (self.method, self.remote, self.port, self.process)

    def to_json(self) -> dict[str, object]:
        """The finding as JSON-ready values, for an event payload."""
        return {
            "method": self.method,
            "remote": self.remote,
            "port": self.port,
            "proto": self.proto,
            "process": self.process,
            "detail": dict(self.detail),
        }


class FindingGate:
    """Lets a finding through once per key per `repeat_after_s` (10 minutes by default)."""

    def __init__(
        self, clock: Callable[[], float], *, repeat_after_s: float = REPEAT_AFTER_S
    ) -> None:
        """`clock` gives seconds (any epoch); `repeat_after_s` is how soon a key may repeat."""
        self._clock = clock
        self._repeat_after_s = repeat_after_s
        self._last: dict[tuple[str, str, int, str | None], float] = {}

    def admit(self, findings: Collection[BypassFinding]) -> list[BypassFinding]:
        """The findings not reported within the last `repeat_after_s`, now marked reported."""
        now = self._clock()
        # Forget old keys first so the table stays as small as the last 10 minutes' findings.
        self._last = {k: t for k, t in self._last.items() if now - t < self._repeat_after_s}
        out = []
        for finding in findings:
            key = finding.key()
            if key not in self._last:
                self._last[key] = now
                out.append(finding)
        return out


def plain_address(text: str) -> str:
    """An address as we compare it: IPv4-mapped IPv6 as IPv4, no zone, compressed IPv6."""
    bare = text.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def allowed_set(addresses: Collection[str]) -> frozenset[str]:
    """The allowed DNS servers as plain addresses, to compare with `plain_address` results."""
    return frozenset(plain_address(a) for a in addresses)


def classify_flow(
    proto: str, remote: str, port: int, *, allowed: Collection[str], doh: Callable[[str], bool]
) -> str | None:
    """The bypass method a flow to remote:port over proto is, or None when it is not one.

    `allowed` holds the plain addresses of our filter, the Pi and our own upstreams: nothing sent
    to them is a bypass, whatever the port. `doh` says whether an address is a public DoH
    resolver."""
    if remote in allowed:
        return None
    if port == DNS_PORT:
        return "dns_elsewhere"
    if proto == "tcp" and port == DOT_PORT:
        return "dot"
    if proto == "udp" and port in DOQ_PORTS:
        return "doq"
    # udp 443 is DoH over HTTP/3
    if port == HTTPS_PORT and doh(remote):
        return "doh"
    return None
