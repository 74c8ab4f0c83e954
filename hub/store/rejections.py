"""Refused messages: counted per (site, device, reason, minute) in rejection_counts, and a few
of each such minute kept in full in the rejections table (topic, size, detail; never the
payload).

Why counts: one row per refusal made a flood of forged envelopes from one device cost a row and
three window scans each (5,000 took 27 s and stalled every other device's reports). Ingest
counts a batch's refusals in memory (hub.ingest.bursts) and adds them here in one statement.

Rows of the rejections table written before schema 2 stand for one refusal each (sampled = 0),
and so do rows written by hand; every count here adds them in. Rows ingest writes now are
samples of what rejection_counts counts (sampled = 1) and are not counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.store.database import Database

MINUTE_MS = 60_000
NO_ID = ""  # the counts' site or device when the topic named none (the key is NOT NULL)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused message: why, where it came from (when known) and how big it was."""

    at_ms: int
    reason: str
    topic: str | None
    site: str | None
    device: str | None
    size: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RejectionCount:
    """How many messages claiming (site, device) were refused for `reason` in one minute."""

    site: str | None
    device: str | None
    reason: str
    minute_ms: int  # the start of the minute (hub clock)
    count: int


def minute_of(at_ms: int) -> int:
    """The start of the minute at_ms falls in."""
    return at_ms - at_ms % MINUTE_MS


def add_rejections(db: Database, rejections: Sequence[Rejection], *, sampled: bool = False) -> None:
    """Record refused messages in full (never their payloads). `sampled`: they are samples of
    refusals add_rejection_counts counts (ingest); otherwise each row counts as one refusal."""
    flag = 1 if sampled else 0
    db.append_rows(
        "rejections",
        ("at_ms", "reason", "topic", "site", "device", "size", "detail", "sampled"),
        [
            (r.at_ms, r.reason, r.topic, r.site, r.device, r.size, r.detail[:500], flag)
            for r in rejections
        ],
    )


def add_rejection_counts(db: Database, counts: Sequence[RejectionCount]) -> None:
    """Add refusals to their minutes' counts (one statement for a batch)."""
    if not counts:
        return
    db.executemany(
        "INSERT INTO rejection_counts (site, device, reason, minute_ms, count) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, device, reason, minute_ms) "
        "DO UPDATE SET count = rejection_counts.count + excluded.count",
        [(c.site or NO_ID, c.device or NO_ID, c.reason, c.minute_ms, c.count) for c in counts],
    )


def rejection_counts(db: Database, since_ms: int = 0) -> dict[str, int]:
    """How many messages were refused for each reason since `since_ms` (counted from the start
    of the minute it falls in)."""
    rows = db.execute(
        "SELECT reason, SUM(n) FROM ("
        "SELECT reason, count AS n FROM rejection_counts WHERE minute_ms >= ? "
        "UNION ALL SELECT reason, 1 AS n FROM rejections WHERE sampled = 0 AND at_ms >= ?"
        ") AS refused GROUP BY reason",
        (minute_of(since_ms), since_ms),
    )
    return {str(r[0]): int(r[1]) for r in rows}


def device_rejection_counts(db: Database, site: str, device: str) -> list[RejectionCount]:
    """Every count held about one device, oldest first (for exports)."""
    rows = db.execute(
        "SELECT reason, minute_ms, count FROM rejection_counts WHERE site = ? AND device = ? "
        "ORDER BY minute_ms, reason",
        (site, device),
    )
    return [RejectionCount(site, device, str(r[0]), int(r[1]), int(r[2])) for r in rows]


def purge_rejection_counts(db: Database, cutoff_ms: int) -> int:
    """Delete the counts of minutes that ended before cutoff_ms; return how many rows went."""
    rows = db.execute(
        "DELETE FROM rejection_counts WHERE minute_ms < ? RETURNING 1", (cutoff_ms - MINUTE_MS,)
    )
    return len(rows)


def refusals_in_window(
    db: Database,
    reasons: Sequence[str],
    enrolled_reasons: Sequence[str],
    since_ms: int,
    until_ms: int,
) -> list[tuple[str, str, str, int]]:
    """(site, device, reason, refusals) in (since_ms, until_ms], for the security rule: refusals
    for `reasons` from anywhere, and for `enrolled_reasons` only those on the topic of an
    enrolled device. Counts are per minute, so the window reaches back to the start of the
    minute since_ms falls in. Unknown sites and devices are NO_ID."""
    if not reasons and not enrolled_reasons:
        return []
    any_marks = ", ".join("?" for _ in reasons) or "NULL"
    enrolled_marks = ", ".join("?" for _ in enrolled_reasons) or "NULL"

    def which(table: str) -> str:
        return (
            f"(reason IN ({any_marks}) OR (reason IN ({enrolled_marks}) AND EXISTS "
            f"(SELECT 1 FROM devices d WHERE d.site = {table}.site "
            f"AND d.device = {table}.device)))"
        )

    rows = db.execute(
        "SELECT site, device, reason, SUM(n) FROM ("
        "SELECT site, device, reason, count AS n FROM rejection_counts "
        f"WHERE minute_ms > ? AND minute_ms <= ? AND {which('rejection_counts')} "
        "UNION ALL SELECT COALESCE(site, ?), COALESCE(device, ?), reason, 1 AS n FROM rejections "
        f"WHERE sampled = 0 AND at_ms > ? AND at_ms <= ? AND {which('rejections')}"
        ") AS refused GROUP BY site, device, reason",
        (
            since_ms - MINUTE_MS, until_ms, *reasons, *enrolled_reasons,
            NO_ID, NO_ID, since_ms, until_ms, *reasons, *enrolled_reasons,
        ),
    )  # fmt: skip
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]


def recent_rejections(db: Database, limit: int = 100) -> list[Rejection]:
    """The latest refused messages kept in full, newest first."""
    rows = db.execute(
        "SELECT at_ms, reason, topic, site, device, size, detail FROM rejections "
        "ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [Rejection(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6] or "") for r in rows]
