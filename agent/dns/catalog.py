"""Loading the configured lists into one category index (the lists package does the work)."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.dns.config import DnsConfig
from agent.dns.lists import CategoryIndex, ListRefresher, ListStats


def load_index(
    config: DnsConfig, clock: Callable[[], float] = time.time
) -> tuple[ListRefresher, CategoryIndex, list[ListStats]]:
    """Parse every list and build the index; raises ListError (nothing half-loaded). The
    refresher keeps the last good copies and refreshes lists when due."""
    refresher = ListRefresher(config.lists, config.server.list_cache_dir, clock=clock)
    index, stats = refresher.load()
    return refresher, index, stats
