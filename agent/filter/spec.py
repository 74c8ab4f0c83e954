"""The filter spec: the typed value the filter engine is built from.

The engine knows nothing of config files. `hedgerow-dns` builds a FilterSpec from its TOML
(agent/dns/config/, `DnsConfig.spec`); the laptop agent builds one from its signed policy.
Both hand it to `agent.filter.chain.build_chain` and `agent.filter.catalog.load_index`.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.filter.lists.model import ListSpec
from agent.filter.schedule import Schedule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port; `text` is how the config wrote it."""

    host: str
    port: int
    text: str

    def bind_failed(self, exc: OSError, purpose: str) -> OSError:
        """The error to raise when binding here failed, naming the address and its purpose:
        "DNS (UDP, [server] listen) on 0.0.0.0:53: Address already in use", not "[Errno 98]..."."""
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return OSError(exc.errno, f"{purpose} on {self.text}: {reason}")

    def local(self) -> tuple[str, int, str]:
        """Where a command on this host reaches what listens here: (host, port, shown), a
        wildcard address as loopback ("0.0.0.0" as 127.0.0.1, "::" as ::1)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        shown = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        return host, self.port, shown


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One upstream resolver: plain DNS (UDP, TCP on truncation) or DNS over TLS."""

    host: str
    port: int
    tls: bool = False
    server_name: str | None = None  # TLS name to verify ("tls://9.9.9.9:853#dns.quad9.net")
    text: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """The upstream resolvers, tried in order."""

    servers: tuple[UpstreamServer, ...]
    timeout_ms: int = 1500
    tls_ca: Path | None = None


DEFAULT_CACHE_ENTRIES = 10_000  # ~430 bytes each (answer_cache.py): ~4 MB, inside 64 MB with 1M names


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """Answer cache bounds."""

    max_entries: int = DEFAULT_CACHE_ENTRIES
    max_ttl_s: int = 86_400


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One group: who is in it and what they may reach."""

    name: str
    clients: tuple[Network, ...]
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    safesearch: bool = False
    youtube: str = "off"
    block_ech: bool = False
    block_bypass: bool = True
    # NXDOMAIN for the public encrypted-DNS resolvers (agent/filter/data/encrypted_dns.txt)
    block_encrypted_dns: bool = True
    schedule: tuple[tuple[str, Schedule], ...] = ()
    pupils: bool = True  # the group holds pupils: check warns when it lets them past the filter


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Everything the engine needs: the lists, the groups and who is in them, how a blocked
    name is answered, where allowed names are asked, and the protocol limits."""

    lists: tuple[ListSpec, ...]
    groups: tuple[GroupSpec, ...]
    default_group: str
    upstream: UpstreamSpec
    allow_clients: tuple[Network, ...]
    list_cache_dir: Path
    blocked_answer: str = "null"  # "null", "nxdomain" or an IP address
    blocked_ttl_s: int = 60
    rate_limit_qps: int = 200  # per client address; 0 turns all rate limiting off
    # Shared by every address of one network (so more addresses do not get more); 0: off.
    rate_limit_prefix_qps: int = 2000
    rate_limit_ipv4_prefix: int = 24
    rate_limit_ipv6_prefix: int = 56
    max_udp_size: int = 1232
    cache: CacheSpec = field(default_factory=CacheSpec)
    beacon_site: str | None = None  # answer signed beacon queries for this site
    # The laptop agent's tamper watch: answer the self-check name (agent/filter/selfcheck.py).
    # A secret: kept out of repr, so a logged spec never shows it.
    self_check_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if self.default_group not in names:
            raise ValueError(f"default group {self.default_group!r} is not one of {names}")

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category some list provides, in first-seen order."""
        return tuple(dict.fromkeys(spec.category for spec in self.lists))

    @property
    def statutory(self) -> frozenset[str]:
        """Categories that block for everyone and can never be allowed."""
        return frozenset(spec.category for spec in self.lists if spec.statutory)

    def group(self, name: str) -> GroupSpec:
        """The group called `name`."""
        return next(g for g in self.groups if g.name == name)
