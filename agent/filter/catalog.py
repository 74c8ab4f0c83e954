"""Loading the spec's lists into one category index (the lists package does the work), and what
is served while a statutory list has no copy at all: every name blocked (docs/dns.md, "A list
that cannot be fetched")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from urllib.parse import urlsplit

from agent.filter.groups import CategoryLookup
from agent.filter.lists import CategoryIndex, ListRefresher, ListSpec, ListStats
from agent.filter.lists.model import is_url
from agent.filter.spec import FilterSpec

# The category of the answers given while a statutory list is missing. Not one the hub shares,
# so the blocked lookups raise no alert each; the missing list is one health alert instead.
STATUTORY_MISSING = "statutory_missing"


def load_index(
    spec: FilterSpec,
    clock: Callable[[], float] = time.time,
    *,
    compiled_only: bool = False,
    save_later: bool = False,
    missing_ok: bool = False,
) -> tuple[ListRefresher, CategoryIndex, list[ListStats]]:
    """Parse every list and build the index; raises ListError (nothing half-loaded). The
    refresher keeps the last good copies and refreshes lists when due. `compiled_only`: load
    the compiled index or raise StaleIndex, never parse. `save_later`: the caller writes the
    compiled index with refresher.save_pending() (after it starts answering). `missing_ok`:
    a list with no usable copy is left out and retried (refresher.missing()), not an error."""
    refresher = ListRefresher(spec.lists, spec.list_cache_dir, clock=clock)
    index, stats = refresher.load(
        compiled_only=compiled_only, save_later=save_later, missing_ok=missing_ok
    )
    return refresher, index, stats


class FailClosed:
    """A CategoryLookup that adds STATUTORY_MISSING to every name but the filter's own (the
    list hosts, the hub): served while a statutory list has no copy, so nothing it might
    list is ever answered, yet the filter can still fetch it and tell the hub."""

    def __init__(self, index: CategoryLookup, exempt: Iterable[str]) -> None:
        self.index = index
        self.categories = (*index.categories, STATUTORY_MISSING)
        self._bit = 1 << len(index.categories)
        self._exempt = frozenset(name.lower().rstrip(".") for name in exempt if name)

    def lookup(self, qname: str) -> int:
        """The index's categories, plus STATUTORY_MISSING unless the name (or a parent) is
        exempt."""
        mask = self.index.lookup(qname)
        labels = qname.split(".")
        for i in range(len(labels)):
            if ".".join(labels[i:]) in self._exempt:
                return mask
        return mask | self._bit


def list_hosts(lists: Sequence[ListSpec]) -> list[str]:
    """The host names the list URLs are fetched from."""
    return [urlsplit(spec.source).hostname or "" for spec in lists if is_url(spec.source)]


def serving(
    spec: FilterSpec,
    index: CategoryLookup,
    missing: Sequence[ListSpec],
    exempt: Iterable[str] = (),
) -> tuple[FilterSpec, CategoryLookup]:
    """The spec and index to build the chain from: as given, unless a statutory list is
    missing; then every name not exempt (the list hosts, `exempt`) is blocked for every group
    as statutory, under STATUTORY_MISSING, with the missing list as its rule."""
    statutory = [one for one in missing if one.statutory]
    if not statutory:
        return spec, index
    # The verdict's rule names what is missing (not a URL itself: a spec would check it as one).
    rule = "no copy yet of " + ", ".join(one.source for one in statutory)
    guard = ListSpec(STATUTORY_MISSING, rule, statutory=True)
    closed = FailClosed(index, [*list_hosts(spec.lists), *exempt])
    return replace(spec, lists=(*spec.lists, guard)), closed
