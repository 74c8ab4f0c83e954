"""hedgerow-dns configuration: the frozen model and its strict reader. The parts the filter
engine reads (groups, upstreams, cache, endpoints) are agent.filter.spec's values."""

from agent.dns.config.model import BeaconConfig, DnsConfig, ReportConfig, ServerConfig
from agent.dns.config.reader import load_config
from agent.filter.addresses import parse_endpoint
from agent.filter.spec import (
    CacheSpec,
    Endpoint,
    FilterSpec,
    GroupSpec,
    Network,
    UpstreamServer,
    UpstreamSpec,
)

__all__ = [
    "BeaconConfig",
    "CacheSpec",
    "DnsConfig",
    "Endpoint",
    "FilterSpec",
    "GroupSpec",
    "Network",
    "ReportConfig",
    "ServerConfig",
    "UpstreamServer",
    "UpstreamSpec",
    "load_config",
    "parse_endpoint",
]
