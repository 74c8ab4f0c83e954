"""Loading the configured lists into one category index (the lists package does the work)."""

from __future__ import annotations

from agent.dns.config import DnsConfig
from agent.dns.lists import CategoryIndex, ListStats, load_lists


def load_index(config: DnsConfig) -> tuple[CategoryIndex, list[ListStats]]:
    """Parse every list and build the index; raises ListError (nothing half-loaded)."""
    return load_lists(config.lists, config.server.list_cache_dir)
