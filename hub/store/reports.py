"""The reports, blocked and attempts tables: one row per accepted envelope, one per blocked
name, one per blocked category (the count the rules' sliding windows add up).

Inserts are multi-row and idempotent: (site, device, seq) is UNIQUE, so a redelivered envelope
inserts nothing and the caller learns which rows were new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hub.store.database import Database

_CHUNK = 200  # rows per INSERT statement: well under SQLite's bound-parameter limit
_REPORT_COLUMNS = (
    "site, device, seq, kind, digest, time_ms, received_ms, client_ip, client_user, body"
)


@dataclass(frozen=True, slots=True)
class BlockedEntry:
    """What was blocked, as the DfE log wants it: name, category and how many times."""

    name: str
    category: str
    count: int


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report about to be written (the body is the decrypted JSON text)."""

    site: str
    device: str
    seq: int
    kind: str
    digest: bytes
    time_ms: int
    received_ms: int
    client_ip: str | None
    client_user: str | None
    body: str
    blocked: tuple[BlockedEntry, ...] = ()
    attempts: tuple[tuple[str, int], ...] = ()  # (category, blocked attempts), for the rules

    @property
    def key(self) -> tuple[str, str, int]:
        """(site, device, seq): unique across the reports table."""
        return (self.site, self.device, self.seq)


def insert_reports(db: Database, reports: Sequence[NewReport]) -> dict[tuple[str, str, int], int]:
    """Insert reports (and their blocked rows); return the ids of those that were new.

    A report whose (site, device, seq) is already stored is skipped, not an error: the caller
    compares digests (stored_digests) to tell a redelivery from a replay.
    """
    ids: dict[tuple[str, str, int], int] = {}
    for start in range(0, len(reports), _CHUNK):
        chunk = reports[start : start + _CHUNK]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        params: list[object] = []
        for r in chunk:
            params += [
                r.site, r.device, r.seq, r.kind, r.digest, r.time_ms, r.received_ms,
                r.client_ip, r.client_user, r.body,
            ]  # fmt: skip
        rows = db.execute(
            f"INSERT INTO reports ({_REPORT_COLUMNS}) VALUES {values} "
            "ON CONFLICT (site, device, seq) DO NOTHING RETURNING id, site, device, seq",
            params,
        )
        for row in rows:
            ids[(row[1], row[2], int(row[3]))] = int(row[0])
    blocked = [
        (ids[r.key], b.name, b.category, b.count)
        for r in reports
        if r.key in ids
        for b in r.blocked
    ]
    if blocked:
        db.executemany(
            "INSERT INTO blocked (report_id, name, category, count) VALUES (?, ?, ?, ?)", blocked
        )
    attempts = [
        (ids[r.key], r.site, r.device, r.client_ip, category, count, r.time_ms)
        for r in reports
        if r.key in ids
        for category, count in r.attempts
    ]
    if attempts:
        db.executemany(
            "INSERT INTO attempts (report_id, site, device, client_ip, category, count, time_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            attempts,
        )
    return ids


def attempts_in_window(
    db: Database,
    site: str,
    device: str,
    category: str,
    since_ms: int,
    until_ms: int,
    *,
    client_ip: str | None = None,
    exclude: int | None = None,
) -> list[tuple[int, int]]:
    """(report id, attempts) of a device's reports with time_ms in (since, until] that count
    blocked attempts in a category, oldest first; only one DNS client's if `client_ip` is set."""
    sql = (
        "SELECT report_id, count FROM attempts WHERE site = ? AND device = ? AND category = ? "
        "AND time_ms > ? AND time_ms <= ? AND report_id <> ?"
    )
    params: list[object] = [site, device, category, since_ms, until_ms, exclude or 0]
    if client_ip is not None:
        sql, params = sql + " AND client_ip = ?", [*params, client_ip]
    rows = db.execute(sql + " ORDER BY time_ms, report_id", params)
    return [(int(r[0]), int(r[1])) for r in rows]


def stored_digest(db: Database, site: str, device: str, seq: int) -> bytes | None:
    """The digest of the stored envelope with this (site, device, seq), or None."""
    rows = db.execute(
        "SELECT digest FROM reports WHERE site = ? AND device = ? AND seq = ?", (site, device, seq)
    )
    return bytes(rows[0][0]) if rows else None


def max_seq(db: Database, site: str, device: str) -> int:
    """The highest seq stored for a device (0 if none)."""
    rows = db.execute("SELECT MAX(seq) FROM reports WHERE site = ? AND device = ?", (site, device))
    return int(rows[0][0] or 0)


def count_reports(db: Database, site: str | None = None, device: str | None = None) -> int:
    """How many reports are stored (optionally of one site / device)."""
    sql = "SELECT COUNT(*) FROM reports WHERE 1 = 1"
    params: list[object] = []
    if site is not None:
        sql, params = sql + " AND site = ?", [*params, site]
    if device is not None:
        sql, params = sql + " AND device = ?", [*params, device]
    return int(db.execute(sql, params)[0][0])
