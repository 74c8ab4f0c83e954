"""A selftest run's way to the hub's checks register, part by part: the hand-off file the
command leaves for the running filter (agent/dns/selftest_inbox.py), and the hub's `selftest`
rule on SQLite and PostgreSQL (hub/rules/selftest.py). End to end through real processes:
tests/test_dns_to_hub.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.dns import selftest_inbox
from common.wire.header import Kind
from common.wire.payload import encode
from hub.checks import read_checks
from hub.rules import RuleEngine, RulesConfig, parse_rules
from hub.store import Database
from tests.test_hub_rules_support import (
    MINUTE,
    T0,
    RecordingListener,
    add_report,
    event,
    open_alerts,
)

PI = {"device": "pi-1", "device_class": "sinkhole", "group": None}


def summary(passed: int, failed: int, untested: list[str] | None = None) -> dict[str, Any]:
    return {
        "server": "127.0.0.1:53",
        "passed": passed,
        "failed": failed,
        "not_testable": untested or [],
        "ok": failed == 0 and passed > 0,
    }


def test_event_detail_is_flat_and_fits_the_wire_schema() -> None:
    failures = [f"pupils gambling casino{i}.example: expected blocked, got A" for i in range(40)]
    detail = selftest_inbox.event_detail(summary(10, 40, ["guests", "staff"]), failures)
    assert detail["not_testable"] == "guests,staff"
    assert all(isinstance(v, (str, int, bool)) for v in detail.values())
    assert 0 < len(detail["failures"]) <= 1024
    assert detail["failures"].startswith("pupils gambling casino0.example")
    encode(Kind.EVENT, {"v": 1, "type": "selftest", "at": T0, "detail": detail})  # no error


def test_drop_then_waiting(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    identity.mkdir()
    detail = selftest_inbox.event_detail(summary(3, 0), [])
    path = selftest_inbox.drop(identity, T0, detail)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(path.parent.glob(".*.tmp"))  # written whole, then renamed
    (found,) = list(selftest_inbox.waiting(identity))
    assert found == (path, T0, detail)


@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"at": "soon", "detail": {}}', b'{"at": 5}', b"\xff\xfe"],
)
def test_a_broken_file_is_reported_not_fatal(tmp_path: Path, content: bytes) -> None:
    inbox = selftest_inbox.inbox_dir(tmp_path)
    inbox.mkdir()
    (inbox / "1-1.json").write_bytes(content)
    ((path, at, detail),) = list(selftest_inbox.waiting(tmp_path))
    assert at is None and detail == {} and path.name == "1-1.json"


def test_a_filter_not_enrolled_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is this filter enrolled"):
        selftest_inbox.drop(tmp_path / "missing", T0, {})


def _run(
    db: Database, payloads: list[dict[str, Any]], rules: RulesConfig | None = None, **options: Any
) -> None:
    engine = RuleEngine(rules or RulesConfig(), RecordingListener())
    for i, payload in enumerate(payloads):
        with db.transaction():
            report = add_report(db, payload, time_ms=T0 + i * MINUTE, **{**PI, **options})
            engine.evaluate(db, report)
    assert not engine.failures


def selftest(
    at: int,
    passed: int,
    failed: int,
    failures: list[str] | None = None,
    untested: list[str] | None = None,
) -> dict[str, Any]:
    detail = selftest_inbox.event_detail(summary(passed, failed, untested), failures or [])
    return event("selftest", at=at, detail=detail)


def test_each_run_is_a_check_and_a_failure_an_alert_the_next_pass_closes(db: Database) -> None:
    bad = ["staff gambling casino.example: expected blocked (0.0.0.0), got NOERROR A 192.0.2.1"]
    _run(db, [selftest(T0, 40, 0), selftest(T0 + MINUTE, 39, 1, bad)])
    checks = read_checks(db)
    assert [(c.kind, c.result, c.passed, c.failed, c.recorded_by) for c in checks] == [
        ("selftest", "partial", 39, 1, "cape-primary/pi-1"),
        ("selftest", "pass", 40, 0, "cape-primary/pi-1"),
    ]
    assert "failed: staff gambling casino.example" in checks[0].what
    assert open_alerts(db) == [("selftest", "selftest", 3, 1, "pi-1")]
    ((summary_text,),) = db.execute("SELECT summary FROM alerts WHERE rule = 'selftest'")
    assert "failed 1 check of 40" in summary_text
    _run(db, [selftest(T0 + 5 * MINUTE, 40, 0)])
    assert open_alerts(db) == []
    assert len(read_checks(db)) == 3


def test_untested_groups_make_a_partial_pass_without_alert(db: Database) -> None:
    _run(db, [selftest(T0, 20, 0, untested=["guests"])])
    (check,) = read_checks(db)
    assert check.result == "partial" and "not tested from this host: guests" in check.what
    assert open_alerts(db) == []


def test_the_rule_can_be_turned_off_but_the_register_still_records(db: Database) -> None:
    rules = parse_rules({"selftest": {"enabled": False}})
    _run(db, [selftest(T0, 0, 5)], rules)
    assert [c.result for c in read_checks(db)] == ["fail"]
    assert open_alerts(db) == []


def test_only_a_dns_filter_and_only_a_valid_summary_count(db: Database) -> None:
    laptop = {"device": "lt-042", "device_class": "pupil-laptop", "group": "pupils"}
    _run(db, [selftest(T0, 0, 5)], None, **laptop)
    _run(db, [event("selftest", at=T0, detail={"passed": "many"})])
    _run(db, [event("selftest", at=T0, detail={"passed": 4})])
    assert read_checks(db) == [] and open_alerts(db) == []


def test_bad_severity_is_a_config_error() -> None:
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="selftest"):
        parse_rules({"selftest": {"severity": 9}})
    assert json.dumps(parse_rules({}).selftest.severity) == "3"
