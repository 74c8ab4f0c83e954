"""The client group of blocked attempts: stored at ingest (migration 11), and filled in for
attempts stored before, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.store import Database, database
from hub.store.database import sqlite_url
from hub.store.migrations import MIGRATIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url(tmp_path / "hub.db")


def _report(db: Database, seq: int, client: object) -> None:
    body = json.dumps({"v": 1, "client": client, "categories": {"adult": 2}})
    db.execute(
        "INSERT INTO reports (site, device, seq, kind, digest, time_ms, received_ms, body) "
        "VALUES ('s', 'dns-1', ?, 'summary', ?, 1000, 1000, ?)",
        (seq, bytes([seq]) * 32, body),
    )
    report_id = db.execute("SELECT id FROM reports WHERE seq = ?", (seq,))[0][0]
    db.execute(
        "INSERT INTO attempts (report_id, site, device, category, count, time_ms) "
        "VALUES (?, 's', 'dns-1', 'adult', 2, 1000)",
        (report_id,),
    )


def test_migration_11_fills_in_the_group_of_attempts_already_stored(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(url)
    try:
        monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS[:10])
        assert db.migrate() == 10
        _report(db, 1, {"ip": "10.0.0.7", "group": "pupils"})
        _report(db, 2, {"ip": "10.0.0.8"})  # no group named: the device's applies
        _report(db, 3, {"group": 7})  # not a group name: none
        _report(db, 4, "not an object")
        monkeypatch.setattr(database, "MIGRATIONS", MIGRATIONS)
        assert db.migrate() == len(MIGRATIONS)
        rows = db.execute(
            "SELECT r.seq, a.client_group FROM attempts a JOIN reports r ON r.id = a.report_id "
            "ORDER BY r.seq"
        )
        assert [(int(seq), group) for seq, group in rows] == [
            (1, "pupils"),
            (2, None),
            (3, None),
            (4, None),
        ]
    finally:
        db.close()
