"""devices, revoke, export and purge against SQLite and PostgreSQL (no broker needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from hub.cli import main
from hub.config import HubConfig, load_config
from hub.store import Database
from hub.store.devices import add_device, get_device
from hub.store.reports import BlockedEntry, NewReport, insert_reports
from hub.store.retention import load_retention
from tests.hub_ingest_fixtures import SITE, enrol, make_hub, query

DAY_MS = 86_400_000


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> HubConfig:
    """A hub data directory on SQLite or on a fresh PostgreSQL database."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    return make_hub(tmp_path, "mqtt://127.0.0.1:1883", url)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run hedgerow-hub in this process; return stdout (exit status must be 0)."""
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def report(device: str, seq: int, received_ms: int, user: str | None = "pupil1") -> NewReport:
    """A stored-report row with one blocked entry."""
    return NewReport(
        site=SITE, device=device, seq=seq, kind="summary", digest=bytes([seq]) * 32,
        time_ms=received_ms, received_ms=received_ms, client_ip="10.0.0.1", client_user=user,
        body=json.dumps({"seq": seq}), blocked=(BlockedEntry("bet.example", "gambling", 2),),
    )  # fmt: skip


def add_alert(db: Database, device: str, last_seen_ms: int, evidence: list[int]) -> int:
    """A closed alert row with one action."""
    alert_id = db.insert(
        "INSERT INTO alerts (rule, dedup_key, severity, site, device, status, first_seen_ms, "
        "last_seen_ms, count, summary, evidence) VALUES ('blocked_content', 'k', 3, ?, ?, "
        "'closed', ?, ?, 1, 'tried gambling sites', ?)",
        (SITE, device, last_seen_ms, last_seen_ms, json.dumps(evidence)),
    )
    db.execute(
        "INSERT INTO alert_actions (alert_id, at_ms, actor, action, note) "
        "VALUES (?, ?, 'dsl', 'acknowledged', 'spoke to pupil')",
        (alert_id, last_seen_ms),
    )
    return alert_id


def test_devices_json_and_revoke(
    config: HubConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub import broker_session

    # No broker here: revoke warns that the retained policy is left, after this long.
    monkeypatch.setattr(broker_session, "REVOKE_TIMEOUT_S", 0.5)
    a = enrol(config, "lt-a")
    enrol(config, "staff-b", device_class="staff-laptop", counts_only=True)
    rows = json.loads(run(capsys, "devices", "--config", str(config.path), "--json"))
    assert [(r["device"], r["class"], r["counts_only"]) for r in rows] == [
        ("lt-a", "pupil-laptop", False),
        ("staff-b", "staff-laptop", True),
    ]
    assert rows[0]["verify_key"] == a.signer.public.hex() and rows[0]["revoked_ms"] is None
    out = run(capsys, "revoke", "--config", str(config.path), "lt-a")
    assert "revoked" in out
    assert "already" in run(capsys, "revoke", "--config", str(config.path), "lt-a")
    rows = json.loads(run(capsys, "devices", "--config", str(config.path), "--json"))
    assert rows[0]["revoked_ms"] is not None and rows[1]["revoked_ms"] is None
    assert "lt-a" in run(capsys, "devices", "--config", str(config.path), "--site", SITE)
    assert main(["revoke", "--config", str(config.path), "lt-nobody"]) == 1


def test_add_device_refuses_a_second_enrolment(config: HubConfig) -> None:
    device = enrol(config, "lt-x")
    db = Database(config.database_url)
    try:
        with pytest.raises(Exception, match="already enrolled"):
            add_device(db, device.info())
        stored = get_device(db, SITE, "lt-x")
        assert stored is not None and stored.verify_key == device.signer.public
    finally:
        db.close()


def test_export_device_and_user(config: HubConfig, capsys: pytest.CaptureFixture[str]) -> None:
    enrol(config, "lt-a")
    enrol(config, "lt-b")
    now = int(time.time() * 1000)
    db = Database(config.database_url)
    try:
        ids = insert_reports(
            db,
            [report("lt-a", 1, now), report("lt-a", 2, now, user="pupil2"), report("lt-b", 1, now)],
        )
        alert_a = add_alert(db, "lt-a", now, [ids[(SITE, "lt-a", 1)]])
        add_alert(db, "lt-b", now, [ids[(SITE, "lt-b", 1)]])
    finally:
        db.close()
    doc = json.loads(run(capsys, "export", "--config", str(config.path), "--device", "lt-a"))
    assert doc["device"]["device"] == "lt-a"
    assert [r["seq"] for r in doc["reports"]] == [1, 2]
    assert doc["reports"][0]["blocked"] == [
        {"name": "bet.example", "category": "gambling", "count": 2}
    ]
    assert doc["reports"][0]["body"] == {"seq": 1}
    assert [a["id"] for a in doc["alerts"]] == [alert_a]
    assert doc["alerts"][0]["actions"][0]["note"] == "spoke to pupil"
    doc = json.loads(run(capsys, "export", "--config", str(config.path), "--user", "pupil1"))
    assert sorted((r["device"], r["seq"]) for r in doc["reports"]) == [("lt-a", 1), ("lt-b", 1)]
    assert len(doc["alerts"]) == 2
    doc = json.loads(run(capsys, "export", "--config", str(config.path), "--user", "pupil2"))
    assert [r["seq"] for r in doc["reports"]] == [2] and doc["alerts"] == []
    assert main(["export", "--config", str(config.path), "--device", "lt-none"]) == 1


def test_purge_deletes_by_retention_and_dry_run_only_counts(
    config: HubConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    enrol(config, "lt-a")
    now = int(time.time() * 1000)
    db = Database(config.database_url)
    try:
        insert_reports(db, [report("lt-a", 1, now - 100 * DAY_MS), report("lt-a", 2, now - DAY_MS)])
        old = add_alert(db, "lt-a", now - 500 * DAY_MS, [1])
        kept = add_alert(db, "lt-a", now - 100 * DAY_MS, [1])
        with db.transaction():  # each alert's escalation chain state goes with it
            for alert_id in (old, kept):
                db.execute(
                    "INSERT INTO escalations (alert_id, started_ms, step, told, due_ms, status) "
                    "VALUES (?, ?, 0, '[]', ?, 'exhausted')",
                    (alert_id, now, now),
                )
    finally:
        db.close()
    path = str(config.path)
    counts = json.loads(run(capsys, "purge", "--config", path, "--dry-run", "--json"))
    assert counts == {
        "dry_run": True, "reports": 1, "blocked": 1, "rejections": 0, "alerts": 1,
        "alert_actions": 1, "notifications": 0,
    }  # fmt: skip
    assert query(config, "SELECT COUNT(*) FROM reports")[0][0] == 2
    assert "deleted: 1 reports" in run(capsys, "purge", "--config", path)
    assert query(config, "SELECT seq FROM reports") == [(2,)]
    assert query(config, "SELECT COUNT(*) FROM blocked")[0][0] == 1
    assert query(config, "SELECT COUNT(*) FROM alerts")[0][0] == 1
    assert query(config, "SELECT COUNT(*) FROM alert_actions")[0][0] == 1
    assert query(config, "SELECT alert_id FROM escalations") == [(kept,)]


def test_retention_section_is_strict(tmp_path: Path) -> None:
    config = make_hub(tmp_path, "mqtt://127.0.0.1:1883", None)
    with open(config.path, "a", encoding="utf-8") as handle:
        handle.write("\n[retention]\nsummaries_days = 30\n")
    assert load_retention(load_config(config.path)).summaries_days == 30
    with open(config.path, "a", encoding="utf-8") as handle:
        handle.write("alert_days = 10\n")  # a typo must not silently keep the default
    with pytest.raises(ConfigError, match="alert_days"):
        load_retention(load_config(config.path))
