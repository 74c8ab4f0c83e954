"""Blocked attempts by category: read from one payload, and counted over a sliding window.

A summary reports blocked attempts twice: per name in `blocked` (which a counts-only device
leaves empty) and per category in `categories`. They describe the same attempts, so the larger
of the two counts is taken, never their sum. An event of type "blocked" is one attempt (or
`count`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.model import StoredReport
from hub.rules.wording import client_of
from hub.store import Database
from hub.store.reports import WindowScope, attempts_in_scopes

MINUTE_MS = 60_000


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def blocked_attempts(payload: Mapping[str, Any]) -> dict[str, int]:
    """Blocked attempts per category in one summary or "blocked" event; {} for anything else."""
    if "type" in payload:
        category = payload.get("category")
        if payload.get("type") != "blocked" or not isinstance(category, str):
            return {}
        return {category: _count(payload.get("count", 1))}
    listed: dict[str, int] = {}
    entries = payload.get("blocked")
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("category"), str):
            category = entry["category"]
            listed[category] = listed.get(category, 0) + _count(entry.get("count"))
    totals = payload.get("categories")
    counted = totals if isinstance(totals, dict) else {}
    names = set(listed) | {k for k in counted if isinstance(k, str)}
    attempts = {name: max(listed.get(name, 0), _count(counted.get(name))) for name in names}
    return {name: n for name, n in attempts.items() if n > 0}


def attempts_of(report: StoredReport) -> dict[str, int]:
    """blocked_attempts() of a stored report's payload (worked out once, by ingest)."""
    return report.attempts if report.attempts is not None else blocked_attempts(report.payload)


def blocked_names(payload: Mapping[str, Any], category: str, limit: int = 3) -> list[str]:
    """Up to `limit` blocked names of a category (domains, never people); none from a
    counts-only device, whose names ingest has emptied."""
    if "type" in payload:
        name = payload.get("name")
        return (
            [name] if isinstance(name, str) and name and payload.get("category") == category else []
        )
    entries = payload.get("blocked")
    names = [
        e["name"]
        for e in (entries if isinstance(entries, list) else ())
        if isinstance(e, dict) and e.get("category") == category and isinstance(e.get("name"), str)
    ]
    names = [name for name in names if name]  # counts-only devices send names emptied
    return names[:limit]


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """One report's sliding window in one category: what window_attempts answers."""

    report: StoredReport
    category: str
    minutes: int


def _scope_key(query: WindowQuery) -> tuple[str, str, str, str | None]:
    client = client_of(query.report)
    ip = client.get("ip") if client is not None else None
    return (
        query.report.site,
        query.report.device,
        query.category.replace("\x00", ""),
        ip.replace("\x00", "") if isinstance(ip, str) else None,
    )


def window_attempts_many(
    db: Database, queries: Sequence[WindowQuery]
) -> list[tuple[int, list[int]]]:
    """Attempts in a category by each report's device (and DNS client) in the `minutes` up to
    the report, judged by device time so spooled reports count where they happened; and the
    report ids (this report first, then oldest first).

    Reads the attempts table that ingest fills with each report, the database being the truth
    shared by every hub process and surviving restarts: the windows of one device and category
    are merged into one index range, read in one statement with those of up to 99 others, and
    cut per report here, so a batch costs a statement per 100 devices, not one per report."""
    spans: dict[tuple[str, str, str, str | None], tuple[int, int]] = {}
    for q in queries:
        key = _scope_key(q)
        since, until = q.report.time_ms - q.minutes * MINUTE_MS, q.report.time_ms
        low, high = spans.get(key, (since, until))
        spans[key] = (min(low, since), max(high, until))
    scopes = {key: WindowScope(*key, low, high) for key, (low, high) in spans.items()}
    rows = attempts_in_scopes(db, list(scopes.values()))
    times = {scope: [r[0] for r in found] for scope, found in rows.items()}
    results = []
    for q in queries:
        scope = scopes[_scope_key(q)]
        found, at = rows[scope], times[scope]
        total = attempts_of(q.report).get(q.category, 0)
        ids = [q.report.id] if total else []
        lo = bisect_right(at, q.report.time_ms - q.minutes * MINUTE_MS)
        hi = bisect_right(at, q.report.time_ms)
        for _, row_id, n in found[lo:hi]:
            if row_id != q.report.id:
                total += n
                ids.append(row_id)
        results.append((total, ids))
    return results
