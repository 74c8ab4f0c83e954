"""The local filter's lookups, tallied for the window's summary (a QuerySink).

The server calls offer() on the event loop, and the service takes the window on the event loop
too, so no lock is needed. Bounded: at most MAX_NAMES blocked names are kept per window (the
counts still count every lookup).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.filter.querylog import QueryRecord

MAX_NAMES = 1_000
BLOCKS = ("blocked", "bypass")
URGENT_SEVERITY = 4  # blocked lookups in categories the hub grades this high are sent at once


@dataclass
class Window:
    """One window's lookups."""

    counts: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    blocked: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_ms: int = 0
    last_ms: int = 0


class DnsTally:
    """Counts by verdict and category, and the blocked names, of the lookups since the last
    take(). `urgent(record)` is called for a blocked lookup that must reach the hub at once."""

    def __init__(self, urgent: Callable[[QueryRecord], None] | None = None) -> None:
        self._window = Window()
        self._urgent = urgent

    def offer(self, record: QueryRecord) -> None:
        """Count one answered lookup (never blocks, never raises)."""
        w = self._window
        w.counts[record.verdict] += 1
        if not w.first_ms:
            w.first_ms = record.time_ms
        w.last_ms = record.time_ms
        if record.verdict not in BLOCKS:
            return
        category = record.category or "uncategorised"
        w.categories[category] += 1
        key = (record.qname, category)
        if key in w.blocked or len(w.blocked) < MAX_NAMES:
            w.blocked[key] += 1
        if self._urgent is not None and is_urgent(category):
            self._urgent(record)

    def take(self, *, counts_only: bool) -> dict[str, Any]:
        """The window's summary fields (counts, categories, blocked, first_seen, last_seen),
        then a new window. counts_only: no names."""
        w, self._window = self._window, Window()
        blocked = (
            []
            if counts_only
            else [
                {"name": name, "category": category, "count": count}
                for (name, category), count in w.blocked.most_common()
            ]
        )
        return {
            "counts": dict(w.counts),
            "categories": dict(w.categories),
            "blocked": blocked,
            "first_seen": w.first_ms,
            "last_seen": w.last_ms,
        }


def is_urgent(category: str) -> bool:
    """Statutory and severity 4-5 categories (common/categories.py), and anti-bypass."""
    from common.categories import lookup

    known = lookup(category)
    return known is not None and known.severity >= URGENT_SEVERITY
