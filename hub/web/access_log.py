"""The access log: every view of an individual's alert, activity or concern (GDPR
accountability), and reading it back for the DSL."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hub.store import Database
from hub.web.permissions import Principal


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One view of one individual's record."""

    id: int
    at_ms: int
    username: str
    role: str
    what: str  # "alert", later "activity", "concern"
    item: str  # the record's id
    via: str  # "page" or "api"


def record_view(db: Database, principal: Principal, what: str, item: str, via: str) -> None:
    """Write that `principal` viewed record `item` of kind `what`."""
    db.execute(
        "INSERT INTO access_log (at_ms, username, role, what, item, via) VALUES (?, ?, ?, ?, ?, ?)",
        (int(time.time() * 1000), principal.username, str(principal.role), what, item, via),
    )


def read_log(
    db: Database, *, before_id: int | None = None, username: str | None = None, limit: int = 100
) -> list[AccessEntry]:
    """Entries newest first, `limit` of them, older than `before_id` (cursor) if given."""
    where: list[str] = []
    params: list[object] = []
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    if username:
        where.append("username = ?")
        params.append(username)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = db.execute(
        f"SELECT id, at_ms, username, role, what, item, via FROM access_log{clause} "
        f"ORDER BY id DESC LIMIT {int(limit)}",
        params,
    )
    return [AccessEntry(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]
