"""The typed, frozen hedgerow-dns configuration (docs/dns.md documents every key)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from agent.dns.lists.model import ListSpec
from agent.dns.paths import LIST_CACHE_DIR
from agent.dns.schedule import Schedule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An IP address and port; `text` is how the config wrote it."""

    host: str
    port: int
    text: str


@dataclass(frozen=True, slots=True)
class UpstreamServer:
    """One upstream resolver: plain DNS (UDP, TCP on truncation) or DNS over TLS."""

    host: str
    port: int
    tls: bool = False
    server_name: str | None = None  # TLS name to verify ("tls://9.9.9.9:853#dns.quad9.net")
    text: str = ""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """[server]: where to listen, who may ask, and protocol limits."""

    listen: tuple[Endpoint, ...]
    allow_clients: tuple[Network, ...]
    rate_limit_qps: int = 200
    metrics: Endpoint | None = None
    tcp_idle_timeout_s: int = 10
    max_tcp_connections: int = 256
    udp_batch: int = 32  # datagrams per recvmmsg/sendmmsg; 0: one per event-loop callback
    max_udp_size: int = 1232
    blocked_ttl_s: int = 60
    list_cache_dir: Path = LIST_CACHE_DIR


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """[upstream]: resolvers tried in order."""

    servers: tuple[UpstreamServer, ...]
    timeout_ms: int = 1500
    tls_ca: Path | None = None


DEFAULT_CACHE_ENTRIES = 10_000  # ~430 bytes each (cache.py): ~4 MB, inside 64 MB with 1M names


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """[cache]: answer cache bounds."""

    max_entries: int = DEFAULT_CACHE_ENTRIES
    max_ttl_s: int = 86_400


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """[groups.NAME]: who is in the group and what they may reach."""

    name: str
    clients: tuple[Network, ...]
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    safesearch: bool = False
    youtube: str = "off"
    block_ech: bool = False
    block_bypass: bool = True
    schedule: tuple[tuple[str, Schedule], ...] = ()


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """[report]: parsed and checked here, used by the reporting sink."""

    hub: str
    identity: Path
    interval_s: int = 300
    immediate: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BeaconConfig:
    """[beacon]: answer signed on-site beacon queries for this site."""

    site: str
    identity: Path


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The whole hedgerow-dns configuration."""

    path: Path
    server: ServerConfig
    upstream: UpstreamConfig
    cache: CacheConfig
    lists: tuple[ListSpec, ...]
    groups: tuple[GroupConfig, ...]
    default_group: str
    blocked_answer: str  # "null", "nxdomain" or an IP address
    report: ReportConfig | None = None
    beacon: BeaconConfig | None = None

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category some list provides, in first-seen order."""
        return tuple(dict.fromkeys(spec.category for spec in self.lists))

    @property
    def statutory(self) -> frozenset[str]:
        """Categories that block for everyone and can never be allowed."""
        return frozenset(spec.category for spec in self.lists if spec.statutory)

    def group(self, name: str) -> GroupConfig:
        """The group called `name`."""
        return next(g for g in self.groups if g.name == name)
