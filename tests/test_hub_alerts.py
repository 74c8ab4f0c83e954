"""The alert store (dedup, escalation, cooldown, evidence, ack/close) and the alerts/ack CLI,
against SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hub import alerts
from hub.alerts import AlertError, AlertPolicy, Finding
from hub.cli import main
from hub.config import load_config
from hub.datadir import init_data_dir
from hub.store import Database
from tests.test_hub_rules_support import MINUTE, SITE, T0, RecordingListener, open_alerts, open_db

POLICY = AlertPolicy(cooldown_ms=60 * MINUTE, evidence_limit=50)
FINDING = Finding(
    rule="blocked_content",
    severity=3,
    site=SITE,
    device="lt-042",
    device_class="pupil-laptop",
    group="year7",
    key="gambling",
    summary="Pupil laptop cape-primary/lt-042 tried to reach gambling sites 3 times; all were blocked.",
    at_ms=T0,
    evidence=(1,),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def at(minutes: int, **changes: object) -> Finding:
    """FINDING, `minutes` after T0, with changes."""
    return replace(FINDING, at_ms=T0 + minutes * MINUTE, **changes)  # type: ignore[arg-type]


def test_repeats_make_one_open_alert_with_a_count(db: Database) -> None:
    listener = RecordingListener()
    for minute in range(3):
        alerts.record(db, at(minute, evidence=(minute + 1,)), POLICY, listener)
    (alert,) = alerts.list_alerts(db)
    assert (alert.count, alert.first_seen_ms, alert.last_seen_ms) == (3, T0, T0 + 2 * MINUTE)
    assert alert.evidence == (1, 2, 3)
    assert [escalated for _, escalated in listener.calls] == [False]  # told once, not per repeat


def test_different_keys_are_different_alerts(db: Database) -> None:
    alerts.record(db, at(0), POLICY)
    alerts.record(db, at(1, key="adult", severity=4), POLICY)
    alerts.record(db, at(2, device="lt-043"), POLICY)
    assert len(alerts.list_alerts(db)) == 3


@pytest.mark.parametrize(
    ("severities", "final", "told"),
    [
        ([3, 4], 4, [(3, False), (4, True)]),
        ([3, 5, 4], 5, [(3, False), (5, True)]),
        ([4, 3, 3], 4, [(4, False)]),
        ([2, 3, 4, 5], 5, [(2, False), (3, True), (4, True), (5, True)]),
    ],
)
def test_escalation(
    db: Database, severities: list[int], final: int, told: list[tuple[int, bool]]
) -> None:
    listener = RecordingListener()
    for minute, severity in enumerate(severities):
        alerts.record(
            db, at(minute, severity=severity, summary=f"level {severity}"), POLICY, listener
        )
    (alert,) = alerts.list_alerts(db)
    assert (alert.severity, alert.count, alert.summary) == (
        final,
        len(severities),
        f"level {final}",
    )
    assert [(a.severity, escalated) for a, escalated in listener.calls] == told
    assert all(a.id == alert.id for a, _ in listener.calls)
    notifications = db.execute("SELECT COUNT(*) FROM notifications WHERE alert_id = ?", (alert.id,))
    assert notifications[0][0] == len(told)


@pytest.mark.parametrize(
    ("settle", "after_minutes", "severity", "new_alert"),
    [
        ("acknowledge", 10, 3, False),
        ("acknowledge", 59, 3, False),
        ("acknowledge", 60, 3, True),
        ("close", 10, 3, False),
        ("close", 90, 3, True),
        ("acknowledge", 10, 5, True),  # rising severity beats the cooldown
    ],
)
def test_cooldown(
    db: Database, settle: str, after_minutes: int, severity: int, new_alert: bool
) -> None:
    listener = RecordingListener()
    first = alerts.record(db, at(0), POLICY, listener)
    getattr(alerts, settle)(db, first.id, T0 + MINUTE, "dsl", "spoke to the pupil")
    later = alerts.record(
        db, at(1 + after_minutes, severity=severity, evidence=(9,)), POLICY, listener
    )
    assert (later.id != first.id) is new_alert
    assert len(listener.calls) == (2 if new_alert else 1)
    if not new_alert:  # folded into the settled alert: counted, not reopened
        settled = alerts.get_alert(db, first.id)
        assert (settled.count, settled.evidence, settled.status) == (
            2,
            (1, 9),
            {"acknowledge": "acknowledged", "close": "closed"}[settle],
        )
        assert open_alerts(db) == []


def test_evidence_is_capped_keeping_the_first_and_latest(db: Database) -> None:
    policy = AlertPolicy(cooldown_ms=0, evidence_limit=5)
    for i in range(1, 21):
        alerts.record(db, at(i, evidence=(i,)), policy)
    (alert,) = alerts.list_alerts(db)
    assert alert.evidence == (1, 17, 18, 19, 20)
    assert alert.count == 20


def test_listener_rows_roll_back_with_the_alert(db: Database) -> None:
    listener = RecordingListener()
    with pytest.raises(RuntimeError), db.transaction():
        alerts.record(db, at(0), POLICY, listener)
        raise RuntimeError("the batch failed")
    assert db.execute("SELECT COUNT(*) FROM alerts")[0][0] == 0
    assert db.execute("SELECT COUNT(*) FROM notifications")[0][0] == 0


def test_acknowledge_and_close_are_recorded(db: Database) -> None:
    alert = alerts.record(db, at(0), POLICY)
    alerts.acknowledge(db, alert.id, T0 + MINUTE, "dsl", "looking into it")
    with pytest.raises(AlertError, match="already acknowledged"):
        alerts.acknowledge(db, alert.id, T0 + MINUTE, "dsl")
    alerts.close(db, alert.id, T0 + 2 * MINUTE, "dsl", "spoke to the pupil")
    with pytest.raises(AlertError, match="already closed"):
        alerts.close(db, alert.id, T0 + 2 * MINUTE, "dsl")
    with pytest.raises(AlertError, match="no alert 999"):
        alerts.acknowledge(db, 999, T0, "dsl")
    assert alerts.actions(db, alert.id) == [
        (T0, "hedgerow-hub", "opened", None),
        (T0 + MINUTE, "dsl", "acknowledged", "looking into it"),
        (T0 + 2 * MINUTE, "dsl", "closed", "spoke to the pupil"),
    ]


@pytest.mark.parametrize(
    ("status", "since", "expected"),
    [
        ("open", None, [2]),
        ("acknowledged", None, [1]),
        ("all", None, [2, 1]),
        ("all", T0 + 5 * MINUTE, [2]),
    ],
)
def test_list_filters(db: Database, status: str, since: int | None, expected: list[int]) -> None:
    first = alerts.record(db, at(0), POLICY)
    alerts.acknowledge(db, first.id, T0, "dsl")
    alerts.record(db, at(10, key="adult", severity=4), POLICY)
    assert [a.id for a in alerts.list_alerts(db, status, since)] == [
        {1: first.id, 2: first.id + 1}[i] for i in expected
    ]


# --- the command line -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_toml(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A data directory made by init_data_dir, on each kind of database."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    return init_data_dir(tmp_path / "data", SITE, database_url=url)


def seed(config: Path) -> list[int]:
    """Two alerts in the data directory's database; their ids."""
    db = Database(load_config(config).database_url)
    try:
        with db.transaction():
            one = alerts.record(db, at(0), POLICY)
            two = alerts.record(db, at(5, key="self_harm", severity=5, summary="Second."), POLICY)
    finally:
        db.close()
    return [one.id, two.id]


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run hedgerow-hub with argv; its stdout as JSON."""
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_lists_alerts_as_json(hub_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = seed(hub_toml)
    listed = cli_json(capsys, "alerts", "--config", str(hub_toml), "--json")
    assert isinstance(listed, list)
    assert [a["id"] for a in listed] == [two, one]  # most severe first
    assert listed[1] == {
        "id": one,
        "rule": "blocked_content",
        "severity": 3,
        "site": SITE,
        "device": "lt-042",
        "device_class": "pupil-laptop",
        "group": "year7",
        "status": "open",
        "first_seen": "2025-03-04T10:00:00+00:00",
        "last_seen": "2025-03-04T10:00:00+00:00",
        "count": 1,
        "summary": FINDING.summary,
        "evidence": [1],
    }
    later = cli_json(
        capsys, "alerts", "--config", str(hub_toml), "--json", "--since", "2025-03-04T10:03"
    )
    assert [a["id"] for a in later] == [two]


def test_cli_ack_and_close(hub_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = seed(hub_toml)
    config = str(hub_toml)
    assert main(["ack", "--config", config, str(one), "--note", "looking", "--by", "dsl"]) == 0
    assert f"alert {one} acknowledged by dsl" in capsys.readouterr().out
    assert main(["ack", "--config", config, str(one), "--by", "dsl"]) == 1
    assert "already acknowledged" in capsys.readouterr().err
    assert main(["ack", "--config", config, str(two), "--close"]) == 1
    assert "--close needs --note" in capsys.readouterr().err
    assert (
        main(
            ["ack", "--config", config, str(two), "--close", "--note", "false alarm", "--by", "dsl"]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_json(capsys, "alerts", "--config", config, "--json") == []
    statuses = {
        a["id"]: a["status"]
        for a in cli_json(capsys, "alerts", "--config", config, "--status", "all", "--json")
    }
    assert statuses == {one: "acknowledged", two: "closed"}
    db = Database(load_config(hub_toml).database_url)
    try:
        rows = db.execute(
            "SELECT alert_id, actor, action, note FROM alert_actions WHERE actor = 'dsl' ORDER BY id"
        )
    finally:
        db.close()
    assert rows == [(one, "dsl", "acknowledged", "looking"), (two, "dsl", "closed", "false alarm")]


def test_cli_text_output(hub_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(hub_toml)
    assert main(["alerts", "--config", str(hub_toml)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(
        "#2  severity 5  open  last 2025-03-04 10:05  x1  cape-primary/lt-042  blocked_content"
    )
    assert out[1] == "    Second."
    assert main(["alerts", "--config", str(hub_toml), "--since", "yesterday"]) == 1
    assert "not an ISO 8601 time" in capsys.readouterr().err
