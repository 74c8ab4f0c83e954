"""Each rule, table-driven, against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hub.errors import StoreError
from hub.rules import RuleEngine, RulesConfig
from hub.rules.hours import Hours
from hub.rules.settings import OffsiteRule
from hub.store import Database
from tests.test_hub_rules_support import (
    DAY,
    HOUR,
    MINUTE,
    SITE,
    T0,
    RecordingListener,
    add_device,
    add_rejection,
    add_report,
    event,
    heartbeat,
    local_ms,
    open_alerts,
    open_db,
    summary,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def run(
    db: Database,
    steps: list[tuple[int, dict[str, Any], dict[str, Any]]],
    rules: RulesConfig | None = None,
) -> RuleEngine:
    """Store and evaluate each (time_ms, payload, report options) in its own transaction."""
    engine = RuleEngine(rules or RulesConfig(), RecordingListener())
    for time_ms, payload, options in steps:
        with db.transaction():
            report = add_report(db, payload, time_ms=time_ms, **options)
            engine.evaluate(db, report)
    assert not engine.failures
    return engine


# --- offsite_use ----------------------------------------------------------------------------

STAFF_HOURS = replace(OffsiteRule(), staff_hours=Hours(7 * 60, 19 * 60))


@pytest.mark.parametrize(
    ("device_class", "clock", "rule", "severity"),
    [
        ("pupil-laptop", "10:00", OffsiteRule(), 3),
        ("pupil-laptop", "21:59", OffsiteRule(), 3),
        ("pupil-laptop", "22:00", OffsiteRule(), 4),
        ("pupil-laptop", "03:00", OffsiteRule(), 4),
        ("pupil-laptop", "05:59", OffsiteRule(), 4),
        ("pupil-laptop", "06:00", OffsiteRule(), 3),
        ("staff-laptop", "23:00", OffsiteRule(), 1),
        ("staff-laptop", "12:00", STAFF_HOURS, 1),
        ("staff-laptop", "06:59", STAFF_HOURS, 3),
        ("staff-laptop", "19:00", STAFF_HOURS, 3),
        ("sinkhole", "23:00", OffsiteRule(), 0),
    ],
)
def test_offsite_grade(device_class: str, clock: str, rule: OffsiteRule, severity: int) -> None:
    from hub.rules.offsite import grade

    hour, minute = (int(x) for x in clock.split(":"))
    assert grade(rule, device_class, hour * 60 + minute)[0] == severity


@pytest.mark.parametrize(
    ("payload", "device_class", "when", "expected"),
    [
        (summary(location="offsite"), "pupil-laptop", local_ms(2025, 3, 4, 11), 3),
        (heartbeat(location="offsite"), "pupil-laptop", local_ms(2025, 3, 4, 23, 30), 4),
        # 23:30 BST is 22:30 UTC: the night is judged in school time, not UTC.
        (heartbeat(location="offsite"), "pupil-laptop", local_ms(2025, 7, 4, 23, 30), 4),
        (heartbeat(location="offsite"), "pupil-laptop", local_ms(2025, 7, 4, 6, 30), 3),
        (heartbeat(location="onsite"), "pupil-laptop", local_ms(2025, 3, 4, 23, 30), None),
        (heartbeat(location="unknown"), "pupil-laptop", local_ms(2025, 3, 4, 23, 30), None),
        (summary(), "pupil-laptop", local_ms(2025, 3, 4, 23, 30), None),
        (summary(location="offsite"), "staff-laptop", local_ms(2025, 3, 4, 23, 30), 1),
    ],
)
def test_offsite_use(
    db: Database, payload: dict[str, Any], device_class: str, when: int, expected: int | None
) -> None:
    run(db, [(when, payload, {"device_class": device_class})])
    found = [a for a in open_alerts(db) if a[0] == "offsite_use"]
    assert found == (
        [] if expected is None else [("offsite_use", "offsite", expected, 1, "lt-042")]
    )


def test_offsite_escalates_from_day_to_night(db: Database) -> None:
    day, night = local_ms(2025, 3, 4, 17), local_ms(2025, 3, 4, 23)
    engine = run(
        db, [(day, heartbeat(location="offsite"), {}), (night, heartbeat(location="offsite"), {})]
    )
    assert open_alerts(db) == [("offsite_use", "offsite", 4, 2, "lt-042")]
    listener = engine._listener
    assert isinstance(listener, RecordingListener)
    assert [(a.severity, escalated) for a, escalated in listener.calls] == [(3, False), (4, True)]
    assert "23:00" in listener.calls[1][0].summary


# --- blocked_content ------------------------------------------------------------------------

PI = {"device": "pi-1", "device_class": "sinkhole", "group": None}
CLIENT_A = {"ip": "10.0.3.17", "group": "year7", "user": "Jane Pupil"}
CLIENT_B = {"ip": "10.0.3.18", "group": "year8"}

BLOCKED_CASES: list[
    tuple[str, list[tuple[int, dict[str, Any], dict[str, Any]]], list[tuple[str, int, int]]]
] = [
    (
        "self-harm once is enough",
        [(0, summary([("a.example", "self_harm", 1)]), {})],
        [("self_harm", 5, 1)],
    ),
    ("iwf from a counts-only summary", [(0, summary(categories={"iwf": 1}), {})], [("iwf", 5, 1)]),
    (
        "adult from a blocked event",
        [(0, event("blocked", category="adult", name="x.example"), {})],
        [("adult", 4, 1)],
    ),
    ("gambling once is below 3 in 10", [(0, summary([("bet.example", "gambling", 1)]), {})], []),
    (
        "gambling 3 times in 10 minutes",
        [(m * MINUTE, summary([("bet.example", "gambling", 1)]), {}) for m in (0, 4, 8)],
        [("gambling", 3, 3)],
    ),
    (
        "gambling 3 times in 30 minutes is not a burst",
        [(m * MINUTE, summary([("bet.example", "gambling", 1)]), {}) for m in (0, 12, 24)],
        [],
    ),
    (
        "gambling 3 in one summary",
        [(0, summary([("bet.example", "gambling", 3)]), {})],
        [("gambling", 3, 3)],
    ),
    (
        "social networks never alert",
        [(0, summary([("sn.example", "social_networks", 50)]), {})],
        [],
    ),
    ("unlisted categories never alert", [(0, summary([("g.example", "games", 50)]), {})], []),
    ("bypass categories are the bypass rule's", [(0, summary([("dns.google", "doh", 1)]), {})], []),
    (
        "list and map count the same attempts once",
        [(0, summary([("bet.example", "gambling", 2)], categories={"gambling": 2}), {})],
        [],
    ),
    (
        "clients behind one Pi are counted apart",
        [
            (0, summary([("bet.example", "gambling", 2)], client=CLIENT_A), PI),
            (MINUTE, summary([("bet.example", "gambling", 1)], client=CLIENT_B), PI),
        ],
        [],
    ),
    (
        "one client behind a Pi reaching the threshold",
        [
            (0, summary([("bet.example", "gambling", 2)], client=CLIENT_A), PI),
            (MINUTE, summary([("bet.example", "gambling", 1)], client=CLIENT_A), PI),
        ],
        [("gambling@10.0.3.17", 3, 3)],
    ),
    (
        "repeats add to the one open alert",
        [(m * MINUTE, summary([("a.example", "self_harm", 1)]), {}) for m in (0, 1, 2)],
        [("self_harm", 5, 3)],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps", "expected"), BLOCKED_CASES, ids=[c[0] for c in BLOCKED_CASES]
)
def test_blocked_content(
    db: Database,
    name: str,
    steps: list[tuple[int, dict[str, Any], dict[str, Any]]],
    expected: list[tuple[str, int, int]],
) -> None:
    run(db, [(T0 + t, p, o) for t, p, o in steps])
    found = [
        (key, severity, count)
        for rule, key, severity, count, _ in open_alerts(db)
        if rule == "blocked_content"
    ]
    assert found == sorted(expected)


def test_blocked_summary_is_a_sentence_without_names(db: Database) -> None:
    steps = [
        (T0 + m * MINUTE, summary([("bet.example", "gambling", 1)], client=CLIENT_A), PI)
        for m in (0, 3, 6)
    ]
    run(db, steps)
    ((text, evidence),) = db.execute("SELECT summary, evidence FROM alerts")
    assert text == (
        "A device at 10.0.3.17 (group year7) behind DNS filter cape-primary/pi-1 tried to reach "
        "gambling sites 3 times in 10 minutes; all were blocked (bet.example)."
    )
    assert "Jane" not in text
    assert len(evidence.split(",")) == 3


def test_blocked_laptop_sentence(db: Database) -> None:
    run(db, [(T0, summary([("a.example", "self_harm", 1)]), {})])
    ((text,),) = db.execute("SELECT summary FROM alerts")
    assert (
        text
        == "Pupil laptop cape-primary/lt-042 tried to reach a self-harm site; it was blocked (a.example)."
    )


# --- bypass ---------------------------------------------------------------------------------

BYPASS_CASES: list[tuple[dict[str, Any], list[tuple[str, int]]]] = [
    (summary([("dns.google", "doh", 1)]), [("doh", 4)]),
    (summary([("nord.example", "vpn", 2), ("tor.example", "tor", 1)]), [("tor", 4), ("vpn", 4)]),
    (event("blocked", category="proxy", name="hide.example"), [("proxy", 4)]),
    (
        event("bypass", detail={"method": "hardcoded_dns", "server": "8.8.8.8"}),
        [("hardcoded_dns", 4)],
    ),
    (event("bypass", category="dot", detail={"port": 853}), [("dot", 4)]),
    (event("bypass"), [("unknown", 4)]),
    (summary([("a.example", "gambling", 1)]), []),
]


@pytest.mark.parametrize(("payload", "expected"), BYPASS_CASES)
def test_bypass(db: Database, payload: dict[str, Any], expected: list[tuple[str, int]]) -> None:
    run(db, [(T0, payload, {})])
    found = [(key, severity) for rule, key, severity, _, _ in open_alerts(db) if rule == "bypass"]
    assert found == expected


def test_bypass_event_sentence(db: Database) -> None:
    run(db, [(T0, event("bypass", detail={"method": "hardcoded_dns", "server": "8.8.8.8"}), {})])
    ((text,),) = db.execute("SELECT summary FROM alerts")
    assert text == (
        "Pupil laptop cape-primary/lt-042 tried to get round the filter "
        "(a hard-coded DNS server: server 8.8.8.8)."
    )


# --- tamper ---------------------------------------------------------------------------------

TAMPER_CASES: list[
    tuple[str, list[tuple[int, dict[str, Any], dict[str, Any]]], list[tuple[str, int]]]
] = [
    ("last will waits for its grace period", [(0, heartbeat(clean_stop=False), {})], []),
    ("clean stop", [(0, heartbeat(clean_stop=True), {})], []),
    ("filter off", [(0, heartbeat(filter_active=False), {})], [("filter_disabled", 4)]),
    ("filter on", [(0, heartbeat(filter_active=True), {})], []),
    (
        "clock 6 minutes ahead",
        [(6 * MINUTE, heartbeat(), {"received_ms": T0})],
        [("clock_skew", 3)],
    ),
    (
        "clock 6 minutes behind",
        [(-6 * MINUTE, heartbeat(), {"received_ms": T0})],
        [("clock_skew", 3)],
    ),
    ("clock 4 minutes out", [(4 * MINUTE, heartbeat(), {"received_ms": T0})], []),
    ("spooled summary is old, not skewed", [(-2 * DAY, summary(), {"received_ms": T0})], []),
    (
        "a last will is sealed at connect time: never clock skew",
        [(-DAY, heartbeat(clean_stop=False), {"received_ms": T0})],
        [],
    ),
    (
        "laptop resolver changed",
        [(0, heartbeat(resolver="127.0.0.53"), {}), (MINUTE, heartbeat(resolver="8.8.8.8"), {})],
        [("resolver_changed", 4)],
    ),
    (
        "laptop resolver unchanged",
        [(0, heartbeat(resolver="127.0.0.53"), {}), (MINUTE, heartbeat(resolver="127.0.0.53"), {})],
        [],
    ),
    (
        "a Pi's upstream is not a laptop resolver",
        [(0, heartbeat(resolver="1.1.1.1"), PI), (MINUTE, heartbeat(resolver="9.9.9.9"), PI)],
        [],
    ),
    (
        "resolver_changed event",
        [(0, event("resolver_changed", detail={"from": "127.0.0.53", "to": "8.8.8.8"}), {})],
        [("resolver_changed", 4)],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps", "expected"), TAMPER_CASES, ids=[c[0] for c in TAMPER_CASES]
)
def test_tamper(
    db: Database,
    name: str,
    steps: list[tuple[int, dict[str, Any], dict[str, Any]]],
    expected: list[tuple[str, int]],
) -> None:
    run(db, [(T0 + t, p, o) for t, p, o in steps])
    found = [(key, severity) for rule, key, severity, _, _ in open_alerts(db) if rule == "tamper"]
    assert found == sorted(expected)


LAST_WILL_CASES: list[tuple[str, list[tuple[int, dict[str, Any]]], int, list[Any]]] = [
    # (name, reports after the will at T0 (time offset, payload), tick at T0 + ..., alerts)
    ("silent through the grace period", [], 10 * MINUTE, [("tamper", "last_will", 2, 1, "lt-042")]),
    ("grace period not over yet", [], 9 * MINUTE, []),
    ("reconnected and reported (a broker restart)", [(MINUTE, summary())], 10 * MINUTE, []),
    ("reconnected with a clean heartbeat", [(MINUTE, heartbeat())], 30 * MINUTE, []),
    (
        "a second will restarts the grace period",
        [(5 * MINUTE, heartbeat(clean_stop=False))],
        10 * MINUTE,
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "after", "tick", "expected"), LAST_WILL_CASES, ids=[c[0] for c in LAST_WILL_CASES]
)
def test_last_will_alerts_only_after_silent_grace_period(
    db: Database, name: str, after: list[tuple[int, dict[str, Any]]], tick: int, expected: list[Any]
) -> None:
    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0)
    engine = run(db, [(T0, heartbeat(clean_stop=False), {})])
    run(db, [(T0 + t, p, {}) for t, p in after])
    engine.tick(db, T0 + tick)
    engine.tick(db, T0 + tick + 30_000)  # the will is judged once: no second count
    assert [a for a in open_alerts(db) if a[0] == "tamper"] == expected


def test_last_will_sentence_and_evidence(db: Database) -> None:
    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0)
    engine = run(db, [(T0, heartbeat(clean_stop=False), {})])
    ((will_id,),) = db.execute("SELECT id FROM reports")
    engine.tick(db, T0 + 12 * MINUTE)
    ((text, evidence),) = db.execute("SELECT summary, evidence FROM alerts")
    assert text == (
        "Pupil laptop cape-primary/lt-042's agent went offline without a clean stop (a crash, "
        "a power cut, or someone stopping it) and has not been heard from for 12 minutes."
    )
    assert evidence == f"[{will_id}]"
    assert db.execute("SELECT COUNT(*) FROM last_wills") == [(0,)]


def test_resolver_sentence(db: Database) -> None:
    run(
        db,
        [
            (T0, heartbeat(resolver="127.0.0.53"), {}),
            (T0 + MINUTE, heartbeat(resolver="8.8.8.8"), {}),
        ],
    )
    ((text,),) = db.execute("SELECT summary FROM alerts")
    assert (
        text
        == "Pupil laptop cape-primary/lt-042's DNS resolver changed from 127.0.0.53 to 8.8.8.8."
    )


def add_policy(db: Database, version: int, created_ms: int, device: str = "*") -> None:
    db.execute(
        "INSERT INTO policies (site, device, version, body, signed, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (SITE, device, version, "{}", bytes(64), created_ms),
    )


@pytest.mark.parametrize(
    ("published_ago", "device_version", "expected"),
    [
        (25 * 60 * MINUTE, 1, [("tamper", "policy_stale", 2, 1, "lt-042")]),
        (23 * 60 * MINUTE, 1, []),
        (25 * 60 * MINUTE, 2, []),
    ],
)
def test_policy_stale(
    db: Database, published_ago: int, device_version: int, expected: list[Any]
) -> None:
    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0, policy_version=device_version)
    add_policy(db, 1, T0 - 10 * DAY)
    add_policy(db, 2, T0 - published_ago)
    engine = RuleEngine(RulesConfig())
    engine.tick(db, T0)
    engine.tick(db, T0 + MINUTE)  # a second tick does not bump the count
    assert open_alerts(db) == expected


def test_policy_stale_resolves_when_caught_up(db: Database) -> None:
    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0, policy_version=1)
    add_policy(db, 2, T0 - 2 * DAY, device="lt-042")
    engine = RuleEngine(RulesConfig())
    engine.tick(db, T0)
    assert len(open_alerts(db)) == 1
    db.execute("UPDATE devices SET policy_version = 2")
    engine.tick(db, T0 + MINUTE)
    assert open_alerts(db) == []
    assert db.execute("SELECT action FROM alert_actions ORDER BY id") == [
        ("opened",),
        ("resolved",),
    ]


# --- silent_device --------------------------------------------------------------------------

SILENT_CASES: list[tuple[str, int | None, int | None, int | None]] = [
    # (device class, last seen ago, revoked, expected severity)
    ("pupil-laptop", 4 * DAY, None, 2),
    ("staff-laptop", 3 * DAY + MINUTE, None, 2),
    ("pupil-laptop", 2 * DAY, None, None),
    ("sinkhole", 11 * MINUTE, None, 4),
    ("sinkhole", 9 * MINUTE, None, None),
    ("pupil-laptop", 10 * DAY, T0 - DAY, None),
    ("pupil-laptop", None, None, 2),  # never heard since enrolment 30 days ago
]


@pytest.mark.parametrize(("device_class", "ago", "revoked", "expected"), SILENT_CASES)
def test_silent_device(
    db: Database, device_class: str, ago: int | None, revoked: int | None, expected: int | None
) -> None:
    add_device(
        db, "d1", device_class, last_seen_ms=None if ago is None else T0 - ago, revoked_ms=revoked
    )
    engine = RuleEngine(RulesConfig())
    engine.tick(db, T0)
    engine.tick(db, T0 + 30_000)
    assert open_alerts(db) == (
        [] if expected is None else [("silent_device", "silent", expected, 1, "d1")]
    )


def test_silent_device_resolves_when_heard(db: Database) -> None:
    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0 - 4 * DAY)
    add_device(db, "pi-1", "sinkhole", last_seen_ms=T0 - HOUR)
    engine = RuleEngine(RulesConfig())
    engine.tick(db, T0)
    assert [a[4] for a in open_alerts(db)] == ["lt-042", "pi-1"]
    ((text,),) = db.execute("SELECT summary FROM alerts WHERE device = 'pi-1'")
    assert (
        text
        == "DNS filter cape-primary/pi-1 has not been heard from for 1 hour (last heard 2025-03-04 09:00 school time)."
    )
    with db.transaction():  # the laptop reports: evaluate resolves its alert at once
        engine.evaluate(db, add_report(db, heartbeat(), time_ms=T0 + MINUTE))
    assert [a[4] for a in open_alerts(db)] == ["pi-1"]
    # Ingest records both as heard; the tick resolves the Pi's alert.
    db.execute("UPDATE devices SET last_seen_ms = ?", (T0 + MINUTE,))
    engine.tick(db, T0 + 2 * MINUTE)  # the Pi is seen again: the tick resolves its alert
    assert open_alerts(db) == []
    actions = db.execute("SELECT actor, action FROM alert_actions WHERE action = 'resolved'")
    assert actions == [("hedgerow-hub", "resolved"), ("hedgerow-hub", "resolved")]


# --- security -------------------------------------------------------------------------------

SECURITY_CASES: list[
    tuple[str, list[tuple[int, str, str | None, str | None]], list[tuple[str, str]]]
] = [
    (
        "four forgeries are not a burst",
        [(m, "bad_signature", SITE, "lt-042") for m in range(4)],
        [],
    ),
    (
        "five forgeries of one device",
        [(m, "bad_signature", SITE, "lt-042") for m in range(5)],
        [(SITE, "lt-042")],
    ),
    (
        "five at one site, different devices",
        [(m, "replay", SITE, f"lt-{m}") for m in range(5)],
        [(SITE, "-")],
    ),
    (
        "unknown sites add up overall",
        [(m, "unknown_device", None, None) for m in range(5)],
        [("-", "-")],
    ),
    ("schema errors are not attacks", [(m, "schema", SITE, "lt-042") for m in range(9)], []),
    ("spread over an hour", [(m * 12, "bad_signature", SITE, "lt-042") for m in range(5)], []),
]


@pytest.mark.parametrize(
    ("name", "rejections", "expected"), SECURITY_CASES, ids=[c[0] for c in SECURITY_CASES]
)
def test_security(
    db: Database,
    name: str,
    rejections: list[tuple[int, str, str | None, str | None]],
    expected: list[tuple[str, str]],
) -> None:
    engine = RuleEngine(RulesConfig(), RecordingListener())
    for minute, reason, site, device in rejections:
        with db.transaction():
            add_rejection(db, T0 + minute * MINUTE, reason, site, device)
            engine.on_rejection(db, reason, site, device, T0 + minute * MINUTE)
    rows = db.execute("SELECT site, device, severity FROM alerts WHERE rule = 'security'")
    assert sorted((r[0], r[1]) for r in rows) == expected
    assert all(r[2] == 3 for r in rows)


def test_security_sentence(db: Database) -> None:
    engine = RuleEngine(RulesConfig())
    for minute, reason in enumerate(["bad_signature"] * 3 + ["replay"] * 2):
        add_rejection(db, T0 + minute, reason, SITE, "lt-042")
        engine.on_rejection(db, reason, SITE, "lt-042", T0 + minute)
    ((text,),) = db.execute("SELECT summary FROM alerts")
    assert text == (
        "The hub refused 5 messages claiming to be cape-primary/lt-042 in 10 minutes "
        "(3 with a bad signature, 2 replayed): someone may be forging or replaying messages."
    )


# --- containment ----------------------------------------------------------------------------


def test_a_rule_tripping_on_a_payload_is_counted_not_raised(db: Database) -> None:
    engine = RuleEngine(RulesConfig())
    report = add_report(db, heartbeat(location="offsite", filter_active=False))
    # A time no calendar can show: offsite_use fails to read the hour; tamper still runs.
    odd = replace(report, time_ms=10**19, received_ms=T0)
    engine.evaluate(db, odd)
    assert engine.failures["offsite_use"] == 1
    assert [a[1] for a in open_alerts(db)] == ["clock_skew", "filter_disabled"]


def test_odd_payload_shapes_do_not_raise(db: Database) -> None:
    engine = RuleEngine(RulesConfig())
    report = add_report(db, summary())
    payloads: list[dict[str, Any]] = [
        {"blocked": "not a list", "categories": {"iwf": "x"}},
        {"blocked": [None, {"category": 5}], "categories": []},
        {"type": "blocked", "category": None},
        {"type": "bypass", "detail": "x"},
        {"type": "resolver_changed", "detail": None},
        {"location": "offsite", "clean_stop": "no", "resolver": 5},
    ]
    for payload in payloads:
        engine.evaluate(db, replace(report, payload=payload))
    assert open_alerts(db) == [
        ("bypass", "unknown", 4, 1, "lt-042"),
        ("offsite_use", "offsite", 3, 1, "lt-042"),
    ]
    assert not engine.failures


def test_database_failures_are_raised(db: Database) -> None:
    engine = RuleEngine(RulesConfig())
    report = add_report(db, summary([("bet.example", "gambling", 1)]))
    db.close()
    with pytest.raises(StoreError):
        engine.evaluate(db, report)


def test_silent_device_acknowledged_stays_quiet_then_resolves(db: Database) -> None:
    from hub import alerts

    add_device(db, "lt-042", "pupil-laptop", last_seen_ms=T0 - 4 * DAY)
    listener = RecordingListener()
    engine = RuleEngine(RulesConfig(), listener)
    engine.tick(db, T0)
    ((alert_id,),) = db.execute("SELECT id FROM alerts")
    alerts.acknowledge(db, alert_id, T0 + MINUTE, "dsl", "laptop at home over half-term")
    for hours in (1, 2, 30):  # still silent, long after the cooldown: no new alert, no count
        engine.tick(db, T0 + hours * HOUR)
    assert [(a.id, a.count, a.status) for a in alerts.list_alerts(db, "all")] == [
        (alert_id, 1, "acknowledged")
    ]
    with db.transaction():
        engine.evaluate(db, add_report(db, heartbeat(), time_ms=T0 + 31 * HOUR))
    assert alerts.get_alert(db, alert_id).status == "closed"
    assert len(listener.calls) == 1


def test_a_device_silent_again_after_resolving_alerts_again(db: Database) -> None:
    add_device(db, "pi-1", "sinkhole", last_seen_ms=T0 - HOUR)
    listener = RecordingListener()
    engine = RuleEngine(RulesConfig(), listener)
    engine.tick(db, T0)
    db.execute("UPDATE devices SET last_seen_ms = ?", (T0 + MINUTE,))
    engine.tick(db, T0 + 2 * MINUTE)  # resolved by the hub: no cooldown follows
    engine.tick(db, T0 + 20 * MINUTE)  # silent again for 19 minutes
    assert open_alerts(db) == [("silent_device", "silent", 4, 1, "pi-1")]
    assert [escalated for _, escalated in listener.calls] == [False, False]


def test_counts_only_sentence_names_no_sites(db: Database) -> None:
    payload = summary([("", "self_harm", 2)])
    payload["counts_only"] = True
    run(db, [(T0, payload, {})])
    ((text,),) = db.execute("SELECT summary FROM alerts")
    assert (
        text
        == "Pupil laptop cape-primary/lt-042 tried to reach self-harm sites 2 times; all were blocked."
    )
