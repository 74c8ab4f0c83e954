"""Loading the spec's lists into one category index (the lists package does the work)."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.filter.lists import CategoryIndex, ListRefresher, ListStats
from agent.filter.spec import FilterSpec


def load_index(
    spec: FilterSpec,
    clock: Callable[[], float] = time.time,
    *,
    compiled_only: bool = False,
    save_later: bool = False,
) -> tuple[ListRefresher, CategoryIndex, list[ListStats]]:
    """Parse every list and build the index; raises ListError (nothing half-loaded). The
    refresher keeps the last good copies and refreshes lists when due. `compiled_only`: load
    the compiled index or raise StaleIndex, never parse. `save_later`: the caller writes the
    compiled index with refresher.save_pending() (after it starts answering)."""
    refresher = ListRefresher(spec.lists, spec.list_cache_dir, clock=clock)
    index, stats = refresher.load(compiled_only=compiled_only, save_later=save_later)
    return refresher, index, stats
