"""The hand-off from the DNS hot path to slow sinks (reports, query log).

The server calls `offer()` once per answered query. A sink must never block and never raise:
when its bounded queue is full it drops the record and counts the drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class QueryRecord:
    """One answered query, as reports and logs see it."""

    time_ms: int
    client_ip: str
    group: str
    qname: str  # normalised: lower-case, no trailing dot, punycode
    qtype: int
    verdict: str  # the Verdict kind's value, e.g. "blocked", "resolved", "cached", "rewritten"
    category: str | None = None  # for blocked/filtered answers
    rule: str | None = None  # which list or rule decided


class QuerySink(Protocol):
    """Receives query records from the hot path."""

    def offer(self, record: QueryRecord) -> None:
        """Take the record without blocking; drop and count it if full."""
