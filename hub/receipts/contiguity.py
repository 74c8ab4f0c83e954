"""The receipt rule (docs/protocol.md, "Delivery receipts"): a device's `through` is the highest
t such that every seq in 1..t is processed, where a seq is processed if

1. an envelope with that seq is stored (whatever its kind: summary, event, heartbeat, will);
2. it is settled: an authentic envelope with that seq was refused for what its own bytes are
   (hub.receipts.settled), so sending it again could only be refused again; or
3. the device declared it: a stored `spool_floor` event with seq d and floor f says the device
   holds nothing unreceipted at or below f, so every seq up to min(f, d - 1) is processed
   (seqs it never sent: its MQTT will, a block skipped at a restart, a report its spool
   refused). The cap keeps a device from speaking for seqs it has not issued yet.

`through` only goes up.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_SETTLED = 1024  # settled seqs remembered above `through`, per device (the lowest are kept)


@dataclass(slots=True)
class Progress:
    """What one hub process knows of one device's receipt."""

    through: int = 0  # every seq in 1..through is processed
    declared: int = 0  # the highest floor the device declared (already capped)
    settled: set[int] = field(default_factory=set)  # settled seqs above `through`
    published: int | None = None  # the `through` this process last published

    def declare(self, floor: int, event_seq: int) -> bool:
        """Note a floor declared by the event with seq `event_seq`; True if it lets `through`
        go further than it is and than what was declared before."""
        capped = max(0, min(floor, event_seq - 1))
        if capped <= max(self.declared, self.through):
            return False
        self.declared = capped
        return True

    def settle(self, seq: int) -> None:
        """Note a settled seq (hub.receipts.settled)."""
        if seq > self.through:
            self.settled.add(seq)
            if len(self.settled) > MAX_SETTLED:
                self.settled.remove(max(self.settled))

    def advance(self, stored_after: Callable[[int], Iterable[int]]) -> int:
        """Move `through` as far as the rule allows and return it; `stored_after(s)` gives the
        device's stored seqs above s in ascending order (read lazily: the walk stops at the
        first gap)."""
        start = max(self.through, self.declared)
        self.through = contiguous(start, stored_after(start), self.settled)
        self.settled = {s for s in self.settled if s > self.through}
        return self.through


def contiguous(start: int, stored: Iterable[int], settled: Iterable[int]) -> int:
    """The highest t >= start such that every seq in (start, t] is in `stored` (ascending) or
    in `settled` (any order)."""
    through = start
    for seq in heapq.merge(stored, sorted(settled)):
        if seq <= through:
            continue
        if seq != through + 1:
            break
        through = seq
    return through
