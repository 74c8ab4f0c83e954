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


@dataclass(frozen=True, slots=True)
class WindowScope:
    """The attempts of one device (and DNS client) in one category with time_ms in (since,
    until]: the union of the windows of a batch's reports of that device."""

    site: str
    device: str
    category: str
    client_ip: str | None
    since_ms: int
    until_ms: int


_SCOPES_PER_STATEMENT = 100  # 6 parameters each: well under SQLite's limit


def attempts_in_scopes(
    db: Database, scopes: Sequence[WindowScope]
) -> dict[WindowScope, list[tuple[int, int, int]]]:
    """(time_ms, report id, attempts) of each scope, ordered by time and id: one statement per
    100 scopes (each clause is a range of the attempts_window index), not one per report."""
    scopes = list(dict.fromkeys(scopes))
    found: dict[WindowScope, list[tuple[int, int, int]]] = {s: [] for s in scopes}
    for start in range(0, len(scopes), _SCOPES_PER_STATEMENT):
        chunk = scopes[start : start + _SCOPES_PER_STATEMENT]
        clauses, params = [], []
        for s in chunk:
            clause = "(site = ? AND device = ? AND category = ? AND time_ms > ? AND time_ms <= ?"
            params += [s.site, s.device, s.category, s.since_ms, s.until_ms]
            if s.client_ip is not None:
                clause += " AND client_ip = ?"
                params.append(s.client_ip)
            clauses.append(clause + ")")
        rows = db.execute(
            "SELECT site, device, category, client_ip, time_ms, report_id, count FROM attempts "
            f"WHERE {' OR '.join(clauses)}",
            params,
        )
        by_key: dict[tuple[str, str, str], list[WindowScope]] = {}
        for s in chunk:
            by_key.setdefault((s.site, s.device, s.category), []).append(s)
        for site, device, category, client_ip, time_ms, report_id, count in rows:
            for s in by_key.get((site, device, category), ()):  # OR-ed clauses may overlap
                if s.client_ip in (None, client_ip) and s.since_ms < time_ms <= s.until_ms:
                    found[s].append((int(time_ms), int(report_id), int(count)))
    for rows_of_scope in found.values():
        rows_of_scope.sort()
    return found


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
