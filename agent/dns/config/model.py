"""The typed, frozen hedgerow-dns configuration (docs/dns.md documents every key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.dns.paths import LIST_CACHE_DIR
from agent.filter.lists.model import ListSpec
from agent.filter.spec import (
    CacheSpec,
    Endpoint,
    FilterSpec,
    GroupSpec,
    Network,
    UpstreamSpec,
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """[server]: where to listen, who may ask, and protocol limits."""

    listen: tuple[Endpoint, ...]
    allow_clients: tuple[Network, ...]
    rate_limit_qps: int = 200
    rate_limit_prefix_qps: int = 2000  # shared by a /24 (IPv4) or /56 (IPv6); 0: off
    rate_limit_ipv4_prefix: int = 24
    rate_limit_ipv6_prefix: int = 56
    metrics: Endpoint | None = None
    tcp_idle_timeout_s: int = 10
    max_tcp_connections: int = 256
    max_tcp_per_client: int = 16
    tcp_message_timeout_s: int = 2
    udp_batch: int = 32  # datagrams per recvmmsg/sendmmsg; 0: one per event-loop callback
    max_udp_size: int = 1232
    blocked_ttl_s: int = 60
    list_cache_dir: Path = LIST_CACHE_DIR


@dataclass(frozen=True, slots=True)
class ReportConfig:
    """[report]: parsed and checked here, used by the reporting sink."""

    hub: str
    identity: Path
    interval_s: int = 300
    immediate: tuple[str, ...] = ()
    resend_after_s: int = 60  # send again what no receipt covers after this long


@dataclass(frozen=True, slots=True)
class BeaconConfig:
    """[beacon]: answer signed on-site beacon queries for this site."""

    site: str
    identity: Path


LEASE_FORMATS = ("dnsmasq", "isc", "kea")  # agent/dns/clients/leases.py parses each


@dataclass(frozen=True, slots=True)
class LeaseFile:
    """[[clients.leases]]: a DHCP server's lease file, re-read when it changes."""

    format: str  # one of LEASE_FORMATS
    path: Path


@dataclass(frozen=True, slots=True)
class StaticName:
    """[clients.names]: a device name (and MAC) the network manager gave an address."""

    ip: str  # canonical text form
    name: str
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class ClientsConfig:
    """[clients]: where device names for client addresses come from (docs/dns.md)."""

    leases: tuple[LeaseFile, ...] = ()
    names: tuple[StaticName, ...] = ()
    check_s: int = 5  # how often lease files are looked at (a stat; parsed only on change)


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The whole hedgerow-dns configuration."""

    path: Path
    server: ServerConfig
    upstream: UpstreamSpec
    cache: CacheSpec
    lists: tuple[ListSpec, ...]
    groups: tuple[GroupSpec, ...]
    default_group: str
    blocked_answer: str  # "null", "nxdomain" or an IP address
    report: ReportConfig | None = None
    beacon: BeaconConfig | None = None
    clients: ClientsConfig = field(default_factory=ClientsConfig)

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category some list provides, in first-seen order (FilterSpec.categories)."""
        return self.spec.categories

    @property
    def statutory(self) -> frozenset[str]:
        """Categories that block for everyone and can never be allowed."""
        return self.spec.statutory

    def group(self, name: str) -> GroupSpec:
        """The group called `name`."""
        return self.spec.group(name)

    @property
    def spec(self) -> FilterSpec:
        """What the filter engine is built from: this file's lists, groups, upstreams and
        limits, without the Pi's listeners, metrics, reports or identity paths."""
        return FilterSpec(
            lists=self.lists,
            groups=self.groups,
            default_group=self.default_group,
            upstream=self.upstream,
            allow_clients=self.server.allow_clients,
            list_cache_dir=self.server.list_cache_dir,
            blocked_answer=self.blocked_answer,
            blocked_ttl_s=self.server.blocked_ttl_s,
            rate_limit_qps=self.server.rate_limit_qps,
            rate_limit_prefix_qps=self.server.rate_limit_prefix_qps,
            rate_limit_ipv4_prefix=self.server.rate_limit_ipv4_prefix,
            rate_limit_ipv6_prefix=self.server.rate_limit_ipv6_prefix,
            max_udp_size=self.server.max_udp_size,
            cache=self.cache,
            beacon_site=self.beacon.site if self.beacon else None,
        )
