"""The rejections table: every refused message, by reason, without its payload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.store.database import Database


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


def add_rejections(db: Database, rejections: Sequence[Rejection]) -> None:
    """Record refused messages (never their payloads)."""
    db.append_rows(
        "rejections",
        ("at_ms", "reason", "topic", "site", "device", "size", "detail"),
        [
            (r.at_ms, r.reason, r.topic, r.site, r.device, r.size, r.detail[:500])
            for r in rejections
        ],
    )


def rejection_counts(db: Database, since_ms: int = 0) -> dict[str, int]:
    """How many messages were refused for each reason since `since_ms`."""
    rows = db.execute(
        "SELECT reason, COUNT(*) FROM rejections WHERE at_ms >= ? GROUP BY reason", (since_ms,)
    )
    return {str(r[0]): int(r[1]) for r in rows}


def recent_rejections(db: Database, limit: int = 100) -> list[Rejection]:
    """The latest refused messages, newest first."""
    rows = db.execute(
        "SELECT at_ms, reason, topic, site, device, size, detail FROM rejections "
        "ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [Rejection(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), r[6] or "") for r in rows]
