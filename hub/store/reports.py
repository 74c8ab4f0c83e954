"""The reports, blocked and attempts tables: one row per accepted envelope, one per blocked
name, one per blocked category (the count the rules' sliding windows add up).

Inserts are multi-row and idempotent: (site, device, seq) is UNIQUE, so a redelivered envelope
inserts nothing and the caller learns which rows were new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hub.store.database import Database, Row
from hub.store.devices import devices_where

_CHUNK = 200  # rows per INSERT statement: well under SQLite's bound-parameter limit
_REPORT_COLUMNS = (
    "site, device, seq, kind, digest, time_ms, received_ms, client_ip, client_user, body"
)

_ATTEMPT_COLUMNS = (
    "report_id", "site", "device", "client_ip", "client_key", "client_name", "category", "count",
    "time_ms", "client_group",
)  # fmt: skip


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
    client_key: str | None = None  # whose attempts they are (hub.rules.attempts.client_identity)
    client_name: str | None = None  # the client's device name, if known (client_name)
    client_group: str | None = None  # the client's group, as the reporting filter named it

    @property
    def key(self) -> tuple[str, str, int]:
        """(site, device, seq): unique across the reports table."""
        return (self.site, self.device, self.seq)


# PostgreSQL: the whole batch in one short statement, its columns as arrays.
_INSERT_UNNEST = (
    f"INSERT INTO reports ({_REPORT_COLUMNS}) SELECT * FROM unnest(?::text[], ?::text[], "
    "?::bigint[], ?::text[], ?::bytea[], ?::bigint[], ?::bigint[], ?::text[], ?::text[], "
    "?::text[]) ON CONFLICT (site, device, seq) DO NOTHING RETURNING id, site, device, seq"
)


def insert_reports(db: Database, reports: Sequence[NewReport]) -> dict[tuple[str, str, int], int]:
    """Insert reports (and their blocked and attempts rows); return the ids of those that were
    new.

    A report whose (site, device, seq) is already stored is skipped, not an error: the caller
    compares digests (stored_digests) to tell a redelivery from a replay.
    """
    if not reports:
        return {}
    if db.dialect == "postgresql":
        rows = db.execute(
            _INSERT_UNNEST,
            [
                [r.site for r in reports], [r.device for r in reports], [r.seq for r in reports],
                [r.kind for r in reports], [r.digest for r in reports],
                [r.time_ms for r in reports], [r.received_ms for r in reports],
                [r.client_ip for r in reports], [r.client_user for r in reports],
                [r.body for r in reports],
            ],
            binary=True,
        )  # fmt: skip
    else:
        rows = []
        for start in range(0, len(reports), _CHUNK):
            chunk = reports[start : start + _CHUNK]
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            params: list[object] = []
            for r in chunk:
                params += [
                    r.site, r.device, r.seq, r.kind, r.digest, r.time_ms, r.received_ms,
                    r.client_ip, r.client_user, r.body,
                ]  # fmt: skip
            rows += db.execute(
                f"INSERT INTO reports ({_REPORT_COLUMNS}) VALUES {values} "
                "ON CONFLICT (site, device, seq) DO NOTHING RETURNING id, site, device, seq",
                params,
            )
    ids = {(row[1], row[2], int(row[3])): int(row[0]) for row in rows}
    new = [r for r in reports if r.key in ids]
    db.append_rows(
        "blocked",
        ("report_id", "name", "category", "count"),
        [(ids[r.key], b.name, b.category, b.count) for r in new for b in r.blocked],
    )
    db.append_rows(
        "attempts",
        _ATTEMPT_COLUMNS,
        [
            (ids[r.key], r.site, r.device, r.client_ip, r.client_key, r.client_name, category,
             count, r.time_ms, r.client_group)
            for r in new
            for category, count in r.attempts
        ],
    )  # fmt: skip
    return ids


@dataclass(frozen=True, slots=True)
class WindowScope:
    """The attempts of one device (and DNS client) in one category with time_ms in (since,
    until]: the union of the windows of a batch's reports of that device.

    Each client field left None matches any row: `client_key` is whose attempts the rows are
    (a row written before it existed counts as its client_ip), `client_ip` the address they
    came from, `client_name` the device name ("" for rows of a client with none)."""

    site: str
    device: str
    category: str
    client_ip: str | None
    since_ms: int
    until_ms: int
    client_key: str | None = None
    client_name: str | None = None


_SCOPES_PER_STATEMENT = 100  # 8 parameters each: well under SQLite's limit
# Which rows a scope's client fields let through (the scope is `s`, the attempts row `a`).
_CLIENT_MATCH = (
    "AND (s.client_ip IS NULL OR a.client_ip = s.client_ip) "
    "AND (s.client_key IS NULL OR COALESCE(a.client_key, a.client_ip) = s.client_key) "
    "AND (s.client_name IS NULL OR COALESCE(a.client_name, '') = s.client_name)"
)


# PostgreSQL: every scope of the batch in one statement (an index range per scope; the
# ordinality says which scope a row was read for).
_SCOPES_UNNEST = (
    "SELECT s.n, a.time_ms, a.report_id, a.count FROM unnest(?::text[], ?::text[], ?::text[], "
    "?::text[], ?::bigint[], ?::bigint[], ?::text[], ?::text[]) WITH ORDINALITY AS s(site, "
    "device, category, client_ip, since_ms, until_ms, client_key, client_name, n) "
    "JOIN attempts a ON a.site = s.site AND a.device = s.device AND a.category = s.category "
    "AND a.time_ms > s.since_ms AND a.time_ms <= s.until_ms " + _CLIENT_MATCH
)


def attempts_in_scopes(
    db: Database, scopes: Sequence[WindowScope]
) -> dict[WindowScope, list[tuple[int, int, int]]]:
    """(time_ms, report id, attempts) of each scope, ordered by time and id: each scope is a
    range of the attempts_window index, read with up to 99 others in one statement (all of
    them at once on PostgreSQL), not one statement per report; each row read comes back with
    the number of the scope it was read for."""
    scopes = list(dict.fromkeys(scopes))
    lists: list[list[tuple[int, int, int]]] = [[] for _ in scopes]
    if db.dialect == "postgresql" and scopes:
        parts = [(0, db.execute(
            _SCOPES_UNNEST,
            [
                [s.site for s in scopes], [s.device for s in scopes],
                [s.category for s in scopes], [s.client_ip for s in scopes],
                [s.since_ms for s in scopes], [s.until_ms for s in scopes],
                [s.client_key for s in scopes], [s.client_name for s in scopes],
            ],
            binary=True,
        ))]  # fmt: skip
    else:
        parts = [
            (start, _scopes_values(db, scopes[start : start + _SCOPES_PER_STATEMENT]))
            for start in range(0, len(scopes), _SCOPES_PER_STATEMENT)
        ]
    for offset, rows in parts:
        for n, time_ms, report_id, count in rows:
            lists[offset + int(n) - 1].append((int(time_ms), int(report_id), int(count)))
    for rows_of_scope in lists:
        rows_of_scope.sort()
    return dict(zip(scopes, lists, strict=True))


def _scopes_values(db: Database, chunk: Sequence[WindowScope]) -> list[Row]:
    """_SCOPES_UNNEST for SQLite: the scopes as a VALUES list, numbered from 1."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
    params: list[object] = []
    for n, s in enumerate(chunk, 1):
        params += [n, s.site, s.device, s.category, s.client_ip, s.since_ms, s.until_ms]
        params += [s.client_key, s.client_name]
    return db.execute(
        "WITH s(n, site, device, category, client_ip, since_ms, until_ms, client_key, "
        f"client_name) AS (VALUES {values}) "
        "SELECT s.n, a.time_ms, a.report_id, a.count FROM s JOIN attempts a "
        "ON a.site = s.site AND a.device = s.device AND a.category = s.category "
        "AND a.time_ms > s.since_ms AND a.time_ms <= s.until_ms " + _CLIENT_MATCH,
        params,
    )


def bodies_of_kind(db: Database, ids: Iterable[int], kind: str) -> dict[int, str]:
    """The bodies of those of these reports that are of one kind ("summary", "event"), by id:
    the rules read summaries' spans and events' times to count an attempt once."""
    wanted = sorted(set(ids))
    found: dict[int, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join(["?"] * len(chunk))
        for report_id, body in db.execute(
            f"SELECT id, body FROM reports WHERE kind = ? AND id IN ({marks})", [kind, *chunk]
        ):
            found[int(report_id)] = str(body)
    return found


def zero_attempts(db: Database, rows: Sequence[tuple[int, str]]) -> None:
    """Set the attempts of these (report id, category) rows to 0: another report counts them
    (an event whose attempt a summary covers)."""
    if rows:
        db.executemany(
            "UPDATE attempts SET count = 0 WHERE report_id = ? AND category = ?", list(rows)
        )


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


def max_seqs(db: Database, devices: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """max_seq() of many devices, one statement per 400 (devices with no report are absent)."""
    found: dict[tuple[str, str], int] = {}
    for where, params in devices_where(devices):
        for site, device, seq in db.execute(
            f"SELECT site, device, MAX(seq) FROM reports WHERE {where} GROUP BY site, device",
            params,
        ):
            found[(site, device)] = int(seq)
    return found


def count_reports(db: Database, site: str | None = None, device: str | None = None) -> int:
    """How many reports are stored (optionally of one site / device)."""
    sql = "SELECT COUNT(*) FROM reports WHERE 1 = 1"
    params: list[object] = []
    if site is not None:
        sql, params = sql + " AND site = ?", [*params, site]
    if device is not None:
        sql, params = sql + " AND device = ?", [*params, device]
    return int(db.execute(sql, params)[0][0])
