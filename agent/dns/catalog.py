"""Loading the configured lists into one category index (the lists package does the work)."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.dns.config import DnsConfig
from agent.dns.lists import CategoryIndex, ListRefresher, ListStats


def load_index(
    config: DnsConfig,
    clock: Callable[[], float] = time.time,
    *,
    compiled_only: bool = False,
    save_later: bool = False,
) -> tuple[ListRefresher, CategoryIndex, list[ListStats]]:
    """Parse every list and build the index; raises ListError (nothing half-loaded). The
    refresher keeps the last good copies and refreshes lists when due. `compiled_only`: load
    the compiled index or raise StaleIndex, never parse. `save_later`: the caller writes the
    compiled index with refresher.save_pending() (after it starts answering)."""
    refresher = ListRefresher(config.lists, config.server.list_cache_dir, clock=clock)
    index, stats = refresher.load(compiled_only=compiled_only, save_later=save_later)
    return refresher, index, stats
