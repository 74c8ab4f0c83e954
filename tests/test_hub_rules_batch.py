"""RuleEngine.evaluate_batch gives exactly the alerts, actions and notifications of evaluate()
on each report in turn, on both databases (ingest inserts a whole batch before the rules run)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from hub import alerts
from hub.model import StoredReport
from hub.rules import RuleEngine, RulesConfig, silent
from hub.rules.engine import REPORT_RULES
from hub.store import Database
from tests.test_hub_rules import BLOCKED_CASES, CLIENT_A, CLIENT_B, PI
from tests.test_hub_rules_support import (
    DAY,
    MINUTE,
    T0,
    RecordingListener,
    add_device,
    add_report,
    event,
    heartbeat,
    local_ms,
    open_db,
    summary,
)

Step = tuple[int, dict[str, Any], dict[str, Any]]

GAMBLING = summary([("bet.example", "gambling", 1)])
SELF_HARM = summary([("a.example", "self_harm", 1)])
MIXED: list[Step] = [
    # Thresholds crossed part-way through the batch, on several devices and Pi clients.
    *((m * MINUTE, GAMBLING, {}) for m in (0, 3, 6, 9, 12, 30)),
    *((m * MINUTE, GAMBLING, {"device": "lt-043"}) for m in (1, 2)),
    (MINUTE, summary([("bet.example", "gambling", 2)], client=CLIENT_A), PI),
    (2 * MINUTE, summary([("bet.example", "gambling", 1)], client=CLIENT_B), PI),
    (4 * MINUTE, summary([("bet.example", "gambling", 1)], client=CLIENT_A), PI),
    # Out of order (a spooled report) and repeats folded into one open alert.
    (-5 * MINUTE, GAMBLING, {}),
    *((m * MINUTE, SELF_HARM, {}) for m in (0, 1, 2)),
    # An escalation within the batch (day, then night), bypass and tamper findings.
    (local_ms(2025, 3, 4, 17) - T0, heartbeat(location="offsite"), {"device": "lt-044"}),
    (local_ms(2025, 3, 4, 23) - T0, heartbeat(location="offsite"), {"device": "lt-044"}),
    (0, summary([("dns.google", "doh", 1)]), {"device": "lt-045"}),
    (0, event("bypass", category="vpn"), {"device": "lt-045"}),
    (0, heartbeat(filter_active=False), {"device": "lt-046"}),
    # A silent device heard again; a settled alert in its cooldown.
    (MINUTE, heartbeat(), {"device": "lt-silent"}),
    (MINUTE, GAMBLING, {"device": "lt-acked"}),
    (2 * MINUTE, GAMBLING, {"device": "lt-acked"}),
    (3 * MINUTE, summary([("a.example", "self_harm", 1)]), {"device": "lt-acked"}),
]
CASES = [(name, steps) for name, steps, _ in BLOCKED_CASES] + [("mixed", MIXED)]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def _prepare(db: Database, site: str, engine: RuleEngine) -> None:
    """A silent alert to resolve, and an acknowledged gambling alert (cooldown) on lt-acked."""
    add_device(db, "lt-silent", "pupil-laptop", last_seen_ms=T0 - 4 * DAY, site=site)
    engine.tick(db, T0)
    with db.transaction():
        for m in (-3, -2, -1):
            engine.evaluate(
                db, add_report(db, GAMBLING, time_ms=T0 + m, device="lt-acked", site=site)
            )
    ((alert_id,),) = db.execute(
        "SELECT id FROM alerts WHERE site = ? AND device = 'lt-acked'", (site,)
    )
    alerts.acknowledge(db, alert_id, T0, "dsl")


def _snapshot(
    db: Database, site: str, reports: list[StoredReport], listener: RecordingListener
) -> tuple[object, ...]:
    """The site's alerts, actions and listener calls, with report ids as positions."""
    position = {r.id: i for i, r in enumerate(reports)}
    rows = db.execute(
        "SELECT id, rule, dedup_key, severity, device, status, first_seen_ms, last_seen_ms, "
        "count, summary, evidence FROM alerts WHERE site = ? ORDER BY id",
        (site,),
    )
    first = int(rows[0][0]) if rows else 0
    found = [
        (
            int(r[0]) - first,
            *r[1:9],
            r[9].replace(site, "SITE"),
            [position.get(i, -1) for i in alerts.get_alert(db, int(r[0])).evidence],
        )
        for r in rows
    ]
    actions = [
        [
            (
                at,
                actor,
                action,
                re.sub(r"report (\d+)", lambda m: f"#{position[int(m[1])]}", n or ""),
            )
            for at, actor, action, n in alerts.actions(db, int(r[0]))
        ]
        for r in rows
    ]
    calls = [
        (a.rule, a.dedup_key, a.severity, a.count, escalated) for a, escalated in listener.calls
    ]
    return found, actions, calls


def _evaluate_alone(db: Database, engine: RuleEngine, report: StoredReport) -> None:
    """The reference: each rule's check() on one report, each finding through record()."""
    silent.heard(db, [report])
    for _, check, _ in REPORT_RULES:
        for finding in check(db, engine.rules, report):
            alerts.record(db, finding, engine.rules.policy, engine._listener)


def _run(db: Database, site: str, steps: list[Step], batch: bool) -> tuple[object, ...]:
    listener = RecordingListener()
    engine = RuleEngine(RulesConfig(), listener)
    _prepare(db, site, engine)
    listener.calls.clear()
    with db.transaction():
        reports = [
            add_report(
                db, payload, time_ms=T0 + t, received_ms=T0 + 10 * MINUTE, **{"site": site, **o}
            )
            for t, payload, o in steps
        ]
        if batch:
            engine.evaluate_batch(db, reports)
        else:
            for report in reports:
                _evaluate_alone(db, engine, report)
    assert not engine.failures
    return _snapshot(db, site, reports, listener)


@pytest.mark.parametrize(("name", "steps"), CASES, ids=[c[0] for c in CASES])
def test_a_batch_gives_the_alerts_of_one_report_at_a_time(
    db: Database, name: str, steps: list[Step]
) -> None:
    one_by_one = _run(db, "site-a", steps, batch=False)
    batched = _run(db, "site-b", steps, batch=True)
    assert batched == one_by_one
    assert one_by_one[0], "the scenario raised no alert at all"


def test_a_report_that_trips_a_batch_rule_costs_only_itself_the_rule(db: Database) -> None:
    engine = RuleEngine(RulesConfig())
    with db.transaction():
        good = add_report(db, summary([("a.example", "self_harm", 1)]))
        odd = add_report(db, GAMBLING, device="lt-043")
        # A time no window can be computed from: the batch window read fails on it.
        odd = replace(odd, time_ms=cast(int, None))
        engine.evaluate_batch(db, [good, odd])
    assert engine.failures == {"blocked_content": 1}
    rows = db.execute("SELECT device, dedup_key FROM alerts")
    assert rows == [("lt-042", "self_harm")]
