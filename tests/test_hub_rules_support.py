"""Builders shared by the rules and alerts tests: databases, stored reports, a recording listener.

Reports are inserted with plain SQL, as ingest would store them, and every payload is checked
against the wire schema first so the tests never feed the rules something a device cannot send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from common.wire.header import Kind
from common.wire.payload import encode
from hub.model import Alert, StoredReport
from hub.rules.attempts import blocked_attempts
from hub.rules.wording import client_identity, client_name
from hub.store import Database, sqlite_url

LONDON = ZoneInfo("Europe/London")
SITE = "cape-primary"
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A migrated database of the kind the test is parametrized with ("sqlite" or "postgresql")."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "hub.db")
    else:
        url = str(request.getfixturevalue("pg_url"))
    db = Database(url)
    db.migrate()
    return db


def local_ms(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """A school-local wall-clock time as ms since the epoch."""
    return int(datetime(year, month, day, hour, minute, tzinfo=LONDON).timestamp() * 1000)


T0 = local_ms(2025, 3, 4, 10)  # a Tuesday morning in term, GMT


def summary(
    blocked: list[tuple[str, str, int]] | None = None,
    categories: dict[str, int] | None = None,
    location: str | None = None,
    client: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A valid summary payload; categories default to the sums of `blocked`."""
    blocked = blocked or []
    if categories is None:
        categories = {}
        for _, category, count in blocked:
            categories[category] = categories.get(category, 0) + count
    doc: dict[str, Any] = {
        "v": 1,
        "source": "dns" if client else "agent",
        "start": 0,
        "end": 300,
        "client": client or {"ip": "127.0.0.1", "group": "year7"},
        "counts": {"queries": 100, "blocked": sum(c for _, _, c in blocked)},
        "categories": categories,
        "blocked": [{"name": n, "category": c, "count": k} for n, c, k in blocked],
        "first_seen": 0,
        "last_seen": 300,
    }
    if location is not None:
        doc["location"] = location
    return doc


def heartbeat(**fields: Any) -> dict[str, Any]:
    """A valid heartbeat payload with extra fields (location, clean_stop, resolver...)."""
    return {"v": 1, "uptime_s": 60, "policy_version": 1, **fields}


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A valid event payload."""
    return {"v": 1, "type": type_, "at": 0, **fields}


def kind_of(payload: dict[str, Any]) -> Kind:
    """Which kind a builder's payload is."""
    if "type" in payload:
        return Kind.EVENT
    return Kind.HEARTBEAT if "uptime_s" in payload else Kind.SUMMARY


def add_report(
    db: Database,
    payload: dict[str, Any],
    *,
    time_ms: int = T0,
    received_ms: int | None = None,
    device: str = "lt-042",
    device_class: str = "pupil-laptop",
    group: str | None = "year7",
    site: str = SITE,
) -> StoredReport:
    """Insert a report row as ingest would and return the StoredReport the engine is given."""
    kind = kind_of(payload)
    body = encode(kind, payload).decode("utf-8")  # fails loudly on a payload devices cannot send
    seq = int(
        db.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE site = ? AND device = ?",
            (site, device),
        )[0][0]
    )
    received = time_ms if received_ms is None else received_ms
    client = payload.get("client") or {}
    who = client_identity(client) if client else None
    report_id = db.insert(
        "INSERT INTO reports (site, device, seq, kind, digest, time_ms, received_ms, client_ip, "
        "client_user, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            site,
            device,
            seq,
            kind.name.lower(),
            bytes(32),
            time_ms,
            received,
            client.get("ip"),
            client.get("user"),
            body,
        ),
    )
    attempts = [
        (report_id, site, device, client.get("ip"), who, client_name(client), category, n, time_ms)
        for category, n in blocked_attempts(payload).items()
    ]
    if attempts:  # what ingest writes with every report (hub.ingest.record)
        db.executemany(
            "INSERT INTO attempts (report_id, site, device, client_ip, client_key, client_name, "
            "category, count, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            attempts,
        )
    return StoredReport(
        id=report_id,
        site=site,
        device=device,
        device_class=device_class,
        group=group,
        kind=kind,
        seq=seq,
        time_ms=time_ms,
        received_ms=received,
        payload=json.loads(body),
    )


def add_device(
    db: Database,
    device: str,
    device_class: str,
    *,
    last_seen_ms: int | None,
    enrolled_ms: int = T0 - 30 * DAY,
    revoked_ms: int | None = None,
    policy_version: int = 0,
    site: str = SITE,
) -> None:
    """Insert a devices row."""
    db.execute(
        "INSERT INTO devices (site, device, class, grp, verify_key, enrolled_ms, revoked_ms, "
        "last_seen_ms, policy_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            site,
            device,
            device_class,
            "year7",
            bytes(32),
            enrolled_ms,
            revoked_ms,
            last_seen_ms,
            policy_version,
        ),
    )


def add_rejection(
    db: Database, at_ms: int, reason: str, site: str | None = SITE, device: str | None = None
) -> None:
    """Insert a rejections row as ingest would."""
    db.execute(
        "INSERT INTO rejections (at_ms, reason, topic, site, device, size) VALUES (?, ?, ?, ?, ?, ?)",
        (at_ms, reason, "hedgerow/v1/x/y/summary", site, device, 100),
    )


@dataclass
class RecordingListener:
    """An AlertListener that remembers what it was told and writes a row, as the outbox would."""

    calls: list[tuple[Alert, bool]] = field(default_factory=list)

    def on_alert(self, db: Database, alert: Alert, escalated: bool) -> None:
        """Remember the call and queue a notification row in the same transaction."""
        self.calls.append((alert, escalated))
        db.execute(
            "INSERT INTO notifications (alert_id, channel, contact, status, next_attempt_ms, "
            "created_ms) VALUES (?, 'email', 'dsl@example.org', 'queued', 0, 0)",
            (alert.id,),
        )


def open_alerts(db: Database) -> list[tuple[str, str, int, int, str]]:
    """(rule, dedup_key, severity, count, device) of every open alert, sorted."""
    rows = db.execute(
        "SELECT rule, dedup_key, severity, count, device FROM alerts WHERE status = 'open'"
    )
    return sorted((r[0], r[1], int(r[2]), int(r[3]), r[4]) for r in rows)
