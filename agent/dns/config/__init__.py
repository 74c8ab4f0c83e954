"""hedgerow-dns configuration: the frozen model and its strict reader."""

from agent.dns.config.model import (
    BeaconConfig,
    CacheConfig,
    DnsConfig,
    Endpoint,
    GroupConfig,
    Network,
    ReportConfig,
    ServerConfig,
    UpstreamConfig,
    UpstreamServer,
)
from agent.dns.config.reader import load_config, parse_endpoint

__all__ = [
    "BeaconConfig",
    "CacheConfig",
    "DnsConfig",
    "Endpoint",
    "GroupConfig",
    "Network",
    "ReportConfig",
    "ServerConfig",
    "UpstreamConfig",
    "UpstreamServer",
    "load_config",
    "parse_endpoint",
]
