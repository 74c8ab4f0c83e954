"""Blocked attempts by category: read from one payload, and counted over a sliding window.

A summary reports blocked attempts twice: per name in `blocked` (which a counts-only device
leaves empty) and per category in `categories`. They describe the same attempts, so the larger
of the two counts is taken, never their sum. An event of type "blocked" is one attempt (or
`count`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.model import StoredReport
from hub.rules.wording import client_of
from hub.store import Database
from hub.store.reports import attempts_in_window

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


def window_attempts(
    db: Database, report: StoredReport, category: str, minutes: int
) -> tuple[int, list[int]]:
    """Attempts in a category by this device (and DNS client) in the `minutes` up to this report,
    judged by device time so spooled reports count where they happened; and the report ids.

    Reads the attempts table that ingest fills with each report (one indexed range scan), the
    database being the truth shared by every hub process and surviving restarts."""
    total = blocked_attempts(report.payload).get(category, 0)
    ids = [report.id] if total else []
    client = client_of(report)
    ip = client.get("ip") if client is not None else None
    rows = attempts_in_window(
        db,
        report.site,
        report.device,
        category.replace("\x00", ""),  # as ingest stored it (PostgreSQL text holds no NUL)
        report.time_ms - minutes * MINUTE_MS,
        report.time_ms,
        client_ip=ip.replace("\x00", "") if isinstance(ip, str) else None,
        exclude=report.id,
    )
    for row_id, n in rows:
        total += n
        ids.append(row_id)
    return total, ids
