"""The answer cache: wire bytes keyed by (qname, qtype, qclass, DO), TTLs counted down on hit.

Negative answers are cached for the SOA minimum (RFC 2308); answers with no usable TTL are not
cached. When full, the oldest insertions are evicted, 1/64 of the cache at a time (cheap, and
expiry keeps the set fresh).

Entries are small tuples of atomic values (see Entry; bytes per entry are measured in
docs/dns.md), untracked by the garbage collector, and remember their records rendered for one
age, so the fast path re-patches TTLs only when the age in whole seconds changes.

Each entry also keeps the names its answer leads to (CNAME, DNAME, SVCB/HTTPS targets:
packet.answer_targets), parsed once when it is stored. The cache is shared by every group and
outlives reloads, so it never decides on them: the chain checks them against the asking
client's group on every hit (resolvers/blocking.py TargetCheck).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.filter import packet
from agent.filter.response import Stored, records_at, unpack_meta

CacheKey = tuple[str, int, int, bool]
Targets = tuple[str, ...]  # names the answer leads to; () for most answers
# (expires_at, stored_at, body, meta, offsets, age, records, targets): the records as received,
# rcode and flags and counts packed in `meta` (Stored.meta), the TTL offsets in the records (2 bytes
# each), the records as last rendered for `age` seconds, and the answer's targets. A tuple of
# atomic values (and a tuple of str): the garbage collector stops tracking it, so a full cache
# adds nothing to a collection's work.
Entry = tuple[float, float, bytes, int, bytes, int, bytes, Targets]
EVICT_FRACTION = 64  # a full cache drops its oldest 1/64 at once


def targets_of(key: CacheKey, stored: Stored) -> Targets:
    """The names a stored answer to `key` leads to (packet.answer_targets); none if no record
    of it can name one (Stored.linked)."""
    if not stored.linked:
        return ()
    qname, qtype, qclass, _ = key
    return packet.answer_targets(qname, qtype, qclass, stored.body, sum(stored.counts))


def _stored(entry: Entry) -> Stored:
    expires_at, stored_at, body, meta, offsets, _, _, _ = entry
    rcode, aa, ad, counts = unpack_meta(meta)
    return Stored(rcode, aa, ad, False, counts, body, offsets, int(expires_at - stored_at))


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

    def entry(self, key: CacheKey) -> tuple[int, bytes, Targets] | None:
        """(meta, records rendered for the entry's age, targets) of a live entry, or None if
        absent or expired (the fast path's lookup; its misses are fetched without lookup())."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        now = self._clock()
        if now >= entry[0]:
            del entries[key]
            self.misses += 1
            return None
        self.hits += 1
        age = int(now - entry[1])
        if age != entry[5]:
            expires_at, stored_at, body, meta, offsets, _, _, targets = entry
            entry = (
                expires_at,
                stored_at,
                body,
                meta,
                offsets,
                age,
                records_at(body, offsets, age),
                targets,
            )
            entries[key] = entry  # an existing key keeps its place in the eviction order
        return entry[3], entry[6], entry[7]

    def get(self, key: CacheKey) -> tuple[Stored, int] | None:
        """The stored answer and its age in whole seconds, or None if absent or expired."""
        hit = self.lookup(key)
        return None if hit is None else (hit[0], hit[1])

    def lookup(self, key: CacheKey) -> tuple[Stored, int, Targets] | None:
        """The stored answer, its age in whole seconds and its targets, or None if absent or
        expired."""
        entry = self._entries.get(key)
        now = self._clock()
        if entry is None or now >= entry[0]:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return _stored(entry), int(now - entry[1]), entry[7]

    def put(self, key: CacheKey, stored: Stored, targets: Targets | None = None) -> None:
        """Keep an answer for min(its TTL, max_ttl_s) seconds, with its targets (parsed here if
        the caller has not parsed them already)."""
        ttl = min(stored.ttl, self.max_ttl_s)
        if ttl <= 0 or self.max_entries <= 0 or stored.truncated:
            return
        entries = self._entries
        if key in entries:
            del entries[key]  # re-inserted below: it becomes the newest
        elif len(entries) >= self.max_entries:
            # Evict a batch of the oldest: one scan from the front per batch, not per insert.
            self._evict(self.max_entries - max(1, self.max_entries // EVICT_FRACTION))
        now = self._clock()
        if targets is None:
            targets = targets_of(key, stored)
        body = stored.body
        entry = (now + ttl, now, body, stored.meta, stored.offsets, 0, body, targets)
        entries[key] = entry

    def _evict(self, keep: int) -> None:
        """Drop the oldest insertions until at most `keep` entries remain."""
        entries = self._entries
        excess = len(entries) - max(keep, 0)
        if excess <= 0:
            return
        # Iterating from the front finds the oldest live entries (after the slots of entries
        # already deleted, until the dict next compacts): hence batches, not one per insert.
        oldest = []
        for key in entries:
            oldest.append(key)
            if len(oldest) >= excess:
                break
        for key in oldest:
            del entries[key]

    def resize(self, max_entries: int, max_ttl_s: int) -> None:
        """Apply new bounds on reload, evicting the oldest entries if needed."""
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self._evict(max_entries)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
