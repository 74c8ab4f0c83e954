"""The answer cache: wire bytes keyed by (qname, qtype, qclass, DO), TTLs counted down on hit.

Negative answers are cached for the SOA minimum (RFC 2308); answers with no usable TTL are not
cached. When full, the oldest insertion is evicted (cheap, and expiry keeps the set fresh).
Each entry also remembers its last rendering (for one age in whole seconds and one kind of
client), so the fast path re-renders TTLs only when the second changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.dns.response import Stored

CacheKey = tuple[str, int, int, bool]


class Entry:
    """One cached answer and the fast path's memo of its last rendering."""

    __slots__ = ("expires_at", "head", "memo", "stored", "stored_at", "tail")

    def __init__(self, stored: Stored, stored_at: float, expires_at: float) -> None:
        self.stored = stored
        self.stored_at = stored_at
        self.expires_at = expires_at
        self.memo = -1  # age * 32 + reply variant of head/tail; -1: nothing rendered yet
        self.head = b""  # flags and counts (header bytes 2..12)
        self.tail = b""  # records with TTLs lowered by the age, then OPT if any


class AnswerCache:
    """A bounded TTL cache of upstream answers."""

    def __init__(
        self, max_entries: int, max_ttl_s: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self._clock = clock
        self._entries: dict[CacheKey, Entry] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Entries held (some may have expired but not yet been dropped)."""
        return len(self._entries)

    def entry(self, key: CacheKey) -> tuple[Entry, int] | None:
        """The live entry and its age in whole seconds, or None if absent or expired. Counts
        hits only: after a miss the full chain asks get(), which counts it once."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.expires_at:
            del self._entries[key]
            return None
        self.hits += 1
        return entry, int(now - entry.stored_at)

    def get(self, key: CacheKey) -> tuple[Stored, int] | None:
        """The stored answer and its age in whole seconds, or None if absent or expired."""
        found = self.entry(key)
        if found is None:
            self.misses += 1
            return None
        return found[0].stored, found[1]

    def put(self, key: CacheKey, stored: Stored) -> None:
        """Keep an answer for min(its TTL, max_ttl_s) seconds."""
        ttl = min(stored.ttl, self.max_ttl_s)
        if ttl <= 0 or self.max_entries <= 0:
            return
        entries = self._entries
        if key not in entries:
            while len(entries) >= self.max_entries:
                del entries[next(iter(entries))]
        now = self._clock()
        entries[key] = Entry(stored, now, now + ttl)

    def resize(self, max_entries: int, max_ttl_s: int) -> None:
        """Apply new bounds on reload, evicting the oldest entries if needed."""
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        while len(self._entries) > max(max_entries, 0):
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
