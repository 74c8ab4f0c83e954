"""The answer cache: wire bytes keyed by (qname, qtype, qclass, DO), TTLs counted down on hit.

Negative answers are cached for the SOA minimum (RFC 2308); answers with no usable TTL are not
cached. When full, the oldest insertion is evicted (cheap, and expiry keeps the set fresh).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.dns.response import Stored

CacheKey = tuple[str, int, int, bool]


class AnswerCache:
    """A bounded TTL cache of upstream answers."""

    def __init__(
        self, max_entries: int, max_ttl_s: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self._clock = clock
        self._entries: dict[CacheKey, tuple[Stored, float, float]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Entries held (some may have expired but not yet been dropped)."""
        return len(self._entries)

    def get(self, key: CacheKey) -> tuple[Stored, int] | None:
        """The stored answer and its age in whole seconds, or None if absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        stored, stored_at, expires_at = entry
        now = self._clock()
        if now >= expires_at:
            del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return stored, int(now - stored_at)

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
        entries[key] = (stored, now, now + ttl)

    def resize(self, max_entries: int, max_ttl_s: int) -> None:
        """Apply new bounds on reload, evicting the oldest entries if needed."""
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        while len(self._entries) > max(max_entries, 0):
            del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
