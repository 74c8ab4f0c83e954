"""The rules for the laptop agent's events (issue 12), from stored reports, against a real
database (SQLite and PostgreSQL): site_state, concern, tamper, spool_dropped, the agent's
health problems and the wording of its bypass findings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from hub.alerts import list_alerts
from hub.notify.mail import alert_email, digest_email
from hub.notify.settings import Contact, NotifySettings
from hub.rules import RuleEngine, RulesConfig, parse_rules
from hub.rules.hours import Hours
from hub.rules.settings import ConcernRule, HealthRule, OffsiteRule
from hub.store import Database
from tests.test_hub_rules_support import (
    MINUTE,
    T0,
    RecordingListener,
    add_report,
    event,
    heartbeat,
    local_ms,
    open_alerts,
    open_db,
    summary,
)

PI = {"device": "pi-1", "device_class": "sinkhole", "group": None}
STAFF = {"device_class": "staff-laptop"}
Step = tuple[int, dict[str, Any], dict[str, Any]]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def run(db: Database, steps: list[Step], rules: RulesConfig | None = None) -> RuleEngine:
    """Store and evaluate each (time_ms, payload, report options) in its own transaction."""
    engine = RuleEngine(rules or RulesConfig(), RecordingListener())
    for time_ms, payload, options in steps:
        with db.transaction():
            report = add_report(db, payload, time_ms=time_ms, **options)
            engine.evaluate(db, report)
    assert not engine.failures
    return engine


def summaries(db: Database, rule: str) -> list[str]:
    """The sentences of a rule's alerts, oldest first."""
    rows = db.execute("SELECT summary FROM alerts WHERE rule = ? ORDER BY id", (rule,))
    return [str(r[0]) for r in rows]


def site_state(
    state: str,
    at: int,
    *,
    previous: str = "on_site",
    logged_in: bool | None = True,
    active: bool | None = True,
) -> dict[str, Any]:
    """A site_state event as the laptop agent sends it."""
    detail: dict[str, Any] = {"state": state, "previous": previous, "reason": "no_answer"}
    if logged_in is not None:
        detail["user_logged_in"] = logged_in
    if active is not None:
        detail["user_active"] = active
    detail["network"] = "k1:3f9a0c"
    return event("site_state", at=at, detail=detail)


# --- site_state and offsite_use -------------------------------------------------------------

STAFF_HOURS = replace(RulesConfig(), offsite=replace(OffsiteRule(), staff_hours=Hours(420, 1140)))
DAY = local_ms(2025, 3, 4, 11)
NIGHT = local_ms(2025, 3, 4, 23, 30)

GRADE_CASES: list[tuple[str, str, dict[str, Any], int, RulesConfig, int | None]] = [
    ("pupil laptop by day", "off_site", {}, DAY, RulesConfig(), 3),
    ("pupil laptop at night", "off_site", {}, NIGHT, RulesConfig(), 4),
    ("staff laptop", "off_site", STAFF, NIGHT, RulesConfig(), 1),
    ("staff laptop in staff hours", "off_site", STAFF, DAY, STAFF_HOURS, 1),
    ("staff laptop out of staff hours", "off_site", STAFF, NIGHT, STAFF_HOURS, 3),
    ("a Pi never", "off_site", PI, NIGHT, RulesConfig(), None),
    ("back on site", "on_site", {}, NIGHT, RulesConfig(), None),
    ("unknown", "unknown", {}, NIGHT, RulesConfig(), None),
    ("captive alone", "captive", {}, NIGHT, RulesConfig(), None),
    (
        "rule off",
        "off_site",
        {},
        NIGHT,
        replace(RulesConfig(), offsite=OffsiteRule(enabled=False)),
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "state", "options", "when", "rules", "expected"),
    GRADE_CASES,
    ids=[c[0] for c in GRADE_CASES],
)
def test_site_state_opens_offsite_use_at_once(
    db: Database,
    name: str,
    state: str,
    options: dict[str, Any],
    when: int,
    rules: RulesConfig,
    expected: int | None,
) -> None:
    run(db, [(when, site_state(state, when), options)], rules)
    device = options.get("device", "lt-042")
    assert open_alerts(db) == (
        [] if expected is None else [("offsite_use", "offsite", expected, 1, device)]
    )


def test_site_state_is_graded_by_when_it_happened(db: Database) -> None:
    # Sealed at night, delivered next morning: judged at night, as the summary is.
    run(db, [(NIGHT, site_state("off_site", NIGHT), {"received_ms": NIGHT + 9 * 60 * MINUTE})])
    assert open_alerts(db) == [("offsite_use", "offsite", 4, 1, "lt-042")]


@pytest.mark.parametrize(
    ("logged_in", "active", "words"),
    [
        (True, True, "a user was logged in and active"),
        (True, False, "a user was logged in"),
        (False, False, "no user was logged in"),
        (None, None, "the laptop did not say whether a user was logged in"),
    ],
)
def test_site_state_says_whether_a_user_was_there(
    db: Database, logged_in: bool | None, active: bool | None, words: str
) -> None:
    run(db, [(NIGHT, site_state("off_site", NIGHT, logged_in=logged_in, active=active), {})])
    assert summaries(db, "offsite_use") == [
        "Pupil laptop cape-primary/lt-042 went off site at 23:30 (school time), during the "
        f"night hours 22:00-06:00; {words}."
    ]


def test_later_summary_and_heartbeat_add_to_the_site_state_alert(db: Database) -> None:
    engine = run(
        db,
        [
            (DAY, site_state("off_site", DAY), {}),
            (DAY + 5 * MINUTE, summary(location="offsite"), {}),
            (DAY + 6 * MINUTE, heartbeat(location="offsite"), {}),
        ],
    )
    assert open_alerts(db) == [("offsite_use", "offsite", 3, 3, "lt-042")]
    (alert,) = list_alerts(db, "open")
    assert len(alert.evidence) == 3
    # The sentence of the event stays: it says who was using the laptop.
    assert alert.summary.endswith("went off site at 11:00 (school time); a user was logged in "
                                  "and active.")  # fmt: skip
    listener = engine._listener
    assert isinstance(listener, RecordingListener)
    assert [escalated for _, escalated in listener.calls] == [False]  # told once


def test_night_summary_escalates_the_site_state_alert(db: Database) -> None:
    evening = local_ms(2025, 3, 4, 21, 50)
    run(
        db,
        [
            (evening, site_state("off_site", evening), {}),
            (NIGHT, summary(location="offsite"), {}),
        ],
    )
    assert open_alerts(db) == [("offsite_use", "offsite", 4, 2, "lt-042")]
    assert summaries(db, "offsite_use") == [
        "Pupil laptop cape-primary/lt-042 was used off site at 23:30 (school time), during the "
        "night hours 22:00-06:00."
    ]


def test_site_state_and_summary_in_one_batch_are_one_alert(db: Database) -> None:
    engine = RuleEngine(RulesConfig(), RecordingListener())
    with db.transaction():
        reports = [
            add_report(db, site_state("off_site", DAY), time_ms=DAY),
            add_report(db, summary(location="offsite"), time_ms=DAY + MINUTE),
        ]
        engine.evaluate_batch(db, reports)
    assert not engine.failures
    assert open_alerts(db) == [("offsite_use", "offsite", 3, 2, "lt-042")]


def test_captive_is_said_in_the_open_alert_and_raises_none(db: Database) -> None:
    later = NIGHT + 4 * MINUTE
    run(
        db,
        [
            (NIGHT, site_state("off_site", NIGHT), {}),
            (later, site_state("captive", later, previous="off_site"), {}),
            (later + MINUTE, site_state("captive", later + MINUTE, previous="off_site"), {}),
        ],
    )
    assert open_alerts(db) == [("offsite_use", "offsite", 4, 1, "lt-042")]  # no new sighting
    (text,) = summaries(db, "offsite_use")
    assert text.startswith("Pupil laptop cape-primary/lt-042 went off site at 23:30")
    assert text.count("captive portal") == 1 and "at 23:35 (school time)" in text
    (alert,) = list_alerts(db, "open")
    assert len(alert.evidence) == 3  # the portal events are evidence


def test_off_site_after_a_captive_portal_says_so(db: Database) -> None:
    run(db, [(NIGHT, site_state("off_site", NIGHT, previous="captive"), {})])
    (text,) = summaries(db, "offsite_use")
    assert "it had been behind a captive portal" in text


def test_captive_without_an_open_alert_is_only_stored(db: Database) -> None:
    run(db, [(NIGHT, site_state("captive", NIGHT), {})])
    assert open_alerts(db) == []
    ((n,),) = db.execute("SELECT COUNT(*) FROM reports WHERE body LIKE ?", ("%captive%",))
    assert int(n) == 1


# --- concern --------------------------------------------------------------------------------


def concern(text: str, at: int = T0) -> dict[str, Any]:
    """A concern event as `hedgerow-agent report-concern` sends it."""
    return event("concern", at=at, detail={"text": text, "user": "jane.pupil"})


def test_each_concern_is_its_own_alert(db: Database) -> None:
    run(
        db,
        [
            (T0, concern("someone sent me a horrible picture"), {}),
            (T0 + MINUTE, concern("it happened again", T0 + MINUTE), {}),
            (T0 + 2 * MINUTE, concern("", T0 + 2 * MINUTE), {}),
        ],
    )
    found = [a for a in open_alerts(db) if a[0] == "concern"]
    assert [(severity, count) for _, _, severity, count, _ in found] == [(4, 1)] * 3
    assert len({key for _, key, _, _, _ in found}) == 3
    texts = summaries(db, "concern")
    assert texts[0] == (
        "A concern was reported on Pupil laptop cape-primary/lt-042 at 2025-03-04 10:00 "
        "(school time), with a written description (in the report: see the evidence)."
    )
    assert texts[2].endswith("without a written description.")
    assert not any("horrible" in t or "jane" in t for t in texts)


def test_concern_text_is_in_the_evidence_never_in_a_subject(db: Database) -> None:
    run(db, [(T0, concern("someone sent me a horrible picture"), {})])
    (alert,) = list_alerts(db, "open")
    (report_id,) = alert.evidence
    ((body,),) = db.execute("SELECT body FROM reports WHERE id = ?", (report_id,))
    assert json.loads(body)["detail"]["text"] == "someone sent me a horrible picture"
    contact = Contact("dsl", "DSL", "dsl@school.example", None, 1)
    for message in (
        alert_email(NotifySettings(), contact, alert),
        digest_email(NotifySettings(), contact, [alert]),
    ):
        assert message["Subject"] in ("Hedgerow alert: severity 4 (concern)",
                                      "Hedgerow daily digest: 1 alert(s)")  # fmt: skip
        assert "horrible" not in message.as_string()


def test_concern_severity_and_switch(db: Database) -> None:
    rules = parse_rules({"concern": {"severity": 5}})
    assert rules.concern == ConcernRule(enabled=True, severity=5)
    run(db, [(T0, concern("x"), {})], rules)
    off = replace(RulesConfig(), concern=ConcernRule(enabled=False))
    run(db, [(T0, concern("y"), {"device": "lt-043"})], off)
    assert [a[2:] for a in open_alerts(db) if a[0] == "concern"] == [(5, 1, "lt-042")]


# --- tamper ---------------------------------------------------------------------------------


def tamper(
    what: str, restored: bool | None = True, moved: tuple[str, str] | None = None
) -> dict[str, Any]:
    """A tamper event as the laptop agent sends it; `moved` is (from, to)."""
    detail: dict[str, Any] = {"what": what}
    if moved is not None:
        detail["from"], detail["to"] = moved
    if restored is not None:
        detail["restored"] = restored
    return event("tamper", at=T0, detail=detail)


TAMPER_CASES: list[tuple[str, list[Step], list[tuple[str, int, int]], str | None]] = [
    (
        "resolver changed and restored",
        [(0, tamper("resolver_changed", moved=("127.0.0.1", "8.8.8.8")), {})],
        [("resolver_changed", 4, 1)],
        "On Pupil laptop cape-primary/lt-042, the DNS resolver was changed behind the agent's "
        "back from 127.0.0.1 to 8.8.8.8; the agent restored its setting.",
    ),
    (
        "filter unreachable, not restored",
        [(0, tamper("filter_unreachable", restored=False), {})],
        [("filter_unreachable", 4, 1)],
        "On Pupil laptop cape-primary/lt-042, the system's DNS stopped reaching the agent's "
        "filter; the agent could not restore its setting.",
    ),
    (
        "a kind this hub does not know",
        [(0, tamper("hosts_file_edited", restored=None), {})],
        [("hosts_file_edited", 4, 1)],
        "On Pupil laptop cape-primary/lt-042, its DNS setting was tampered with (hosts file "
        "edited).",
    ),
    (
        "a what naming the hub's own finding is keyed tamper",
        [(0, tamper("policy_stale"), {})],
        [("tamper", 4, 1)],
        None,
    ),
    (
        "an odd what is keyed tamper",
        [(0, tamper("Not An Id!"), {})],
        [("tamper", 4, 1)],
        None,
    ),
    (
        "shares the resolver_changed event's alert",
        [
            (0, event("resolver_changed", detail={"from": "127.0.0.1", "to": "1.1.1.1"}), {}),
            (MINUTE, tamper("resolver_changed", moved=("127.0.0.1", "1.1.1.1")), {}),
        ],
        [("resolver_changed", 4, 2)],
        None,
    ),
    (
        "staff laptops too",
        [(0, tamper("resolver_changed"), STAFF)],
        [("resolver_changed", 4, 1)],
        None,
    ),
    ("laptops only", [(0, tamper("resolver_changed"), PI)], [], None),
]


@pytest.mark.parametrize(
    ("name", "steps", "expected", "sentence"), TAMPER_CASES, ids=[c[0] for c in TAMPER_CASES]
)
def test_tamper_event(
    db: Database,
    name: str,
    steps: list[Step],
    expected: list[tuple[str, int, int]],
    sentence: str | None,
) -> None:
    run(db, [(T0 + t, p, o) for t, p, o in steps])
    found = [(key, sev, count) for rule, key, sev, count, _ in open_alerts(db) if rule == "tamper"]
    assert found == expected
    if sentence is not None:
        assert summaries(db, "tamper") == [sentence]


def test_tamper_event_severity_follows_resolver_changed_severity(db: Database) -> None:
    rules = parse_rules({"tamper": {"resolver_changed_severity": 5}})
    run(db, [(T0, tamper("resolver_changed"), {})], rules)
    assert open_alerts(db) == [("tamper", "resolver_changed", 5, 1, "lt-042")]


# --- spool_dropped and the agent's health problems ------------------------------------------


def dropped(count: int, oldest: int, newest: int) -> dict[str, Any]:
    """A spool_dropped event."""
    detail = {"count": count, "oldest_at": oldest, "newest_at": newest}
    return event("spool_dropped", at=T0, detail=detail)


def test_spool_dropped_is_a_health_alert(db: Database) -> None:
    nine, eleven = local_ms(2025, 3, 4, 9), local_ms(2025, 3, 4, 11)
    run(
        db,
        [
            (T0, dropped(12, nine, eleven), {}),
            (T0 + MINUTE, dropped(1, eleven, eleven), {}),
        ],
    )
    assert open_alerts(db) == [("health", "spool_dropped", 3, 2, "lt-042")]
    assert summaries(db, "health") == [
        "Pupil laptop cape-primary/lt-042's report spool was full (offline too long), so it "
        "dropped 1 routine report (its oldest summaries and heartbeats) covering 2025-03-04 "
        "11:00 to 2025-03-04 11:00 (school time): that time's activity will never reach the hub."
    ]


def problem(kind: str, error: str | None = None, **more: Any) -> dict[str, Any]:
    """A laptop agent's health event."""
    detail: dict[str, Any] = {"problem": kind, **more}
    if error is not None:
        detail["error"] = error
    return event("health", at=T0, detail=detail)


HEALTH_CASES: list[tuple[str, list[Step], list[tuple[str, int, int]]]] = [
    (
        "sniffer unavailable",
        [(0, problem("sniffer_unavailable", "no CAP_NET_RAW"), {})],
        [("problem:sniffer_unavailable", 2, 1)],
    ),
    (
        "netlink unavailable",
        [(0, problem("netlink_unavailable", "EPERM"), {})],
        [("problem:netlink_unavailable", 2, 1)],
    ),
    (
        "filter failed",
        [(0, problem("filter_failed", "bind: in use"), {})],
        [("problem:filter_failed", 4, 1)],
    ),
    ("a kind not known yet", [(0, problem("battery_low"), {})], [("problem:battery_low", 2, 1)]),
    ("an odd kind is ignored", [(0, problem("Not An Id"), {})], []),
    (
        "each kind its own alert, repeats add",
        [
            (0, problem("sniffer_unavailable"), {}),
            (MINUTE, problem("sniffer_unavailable"), {}),
            (2 * MINUTE, problem("filter_failed"), {}),
        ],
        [("problem:filter_failed", 4, 1), ("problem:sniffer_unavailable", 2, 2)],
    ),
    (
        "<kind>_recovered closes it",
        [
            (0, problem("sniffer_unavailable"), {}),
            (MINUTE, problem("filter_failed"), {}),
            (2 * MINUTE, problem("sniffer_unavailable_recovered"), {}),
        ],
        [("problem:filter_failed", 4, 1)],
    ),
    (
        "recovered = true closes it",
        [
            (0, problem("filter_failed"), {}),
            (MINUTE, problem("filter_failed", recovered=True), {}),
        ],
        [],
    ),
    (
        "a DNS filter's list health still works",
        [
            (0, problem("missing", list="https://l.example/a.txt", category="adult"), PI),
            (MINUTE, problem("filter_failed"), PI),
        ],
        [("list_missing:adult:", 4, 1), ("problem:filter_failed", 4, 1)],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps", "expected"), HEALTH_CASES, ids=[c[0] for c in HEALTH_CASES]
)
def test_agent_health_problems(
    db: Database, name: str, steps: list[Step], expected: list[tuple[str, int, int]]
) -> None:
    run(db, [(T0 + t, p, o) for t, p, o in steps])
    found = [(key, sev, count) for rule, key, sev, count, _ in open_alerts(db) if rule == "health"]
    # A list's key ends in a digest of its source: compare up to the category.
    found = [(k.rsplit(":", 1)[0] + ":" if k.startswith("list_missing:") else k, s, c)
             for k, s, c in found]  # fmt: skip
    assert found == expected


def test_agent_health_wording_and_resolution(db: Database) -> None:
    run(db, [(T0, problem("filter_failed", "bind 127.0.0.1:53: address in use"), {})])
    assert summaries(db, "health") == [
        "On Pupil laptop cape-primary/lt-042, its own DNS filter failed: the laptop fails "
        "closed, so it may have no working DNS (and no web access) until the filter recovers "
        "(bind 127.0.0.1:53: address in use)."
    ]
    run(db, [(T0 + MINUTE, problem("filter_failed_recovered"), {})])
    ((status, note),) = db.execute(
        "SELECT a.status, x.note FROM alerts a JOIN alert_actions x ON x.alert_id = a.id "
        "WHERE x.action = 'resolved'"
    )
    assert (status, note) == ("closed", "the device says filter_failed recovered")


def test_health_severities_are_configurable(db: Database) -> None:
    rules = parse_rules(
        {"health": {"sniffer_unavailable_severity": 0, "spool_dropped_severity": 5}}
    )
    assert rules.health == replace(
        HealthRule(), sniffer_unavailable_severity=0, spool_dropped_severity=5
    )
    run(db, [(T0, problem("sniffer_unavailable"), {}), (T0, dropped(3, T0, T0), {})], rules)
    assert open_alerts(db) == [("health", "spool_dropped", 5, 1, "lt-042")]


# --- bypass wording -------------------------------------------------------------------------

# As the laptop agent sends them: the method's category (dot, doh, vpn, bypass) in `category`,
# the method itself and the finding in `detail`.
BYPASS_WORDS: list[tuple[str | None, dict[str, Any], str, str]] = [
    (
        "dot",
        {"method": "dot", "remote": "1.1.1.1", "port": 853, "proto": "tcp", "process": "firefox"},
        "dot",
        "(DNS-over-TLS: to 1.1.1.1 port 853 over TCP, by the program firefox)",
    ),
    (
        "dot",
        {"method": "doq", "remote": "94.140.14.14", "port": 853, "proto": "udp"},
        "dot",
        "(DNS-over-QUIC: to 94.140.14.14 port 853 over UDP)",
    ),
    (
        "doh",
        {"method": "doh", "remote": "8.8.8.8", "port": 443, "proto": "tcp", "process": "chrome"},
        "doh",
        "(DNS-over-HTTPS: to 8.8.8.8 port 443 over TCP, by the program chrome)",
    ),
    (
        "bypass",
        {"method": "dns_elsewhere", "remote": "9.9.9.9", "port": 53, "proto": "udp"},
        "bypass",
        "(plain DNS to a server other than the filter: to 9.9.9.9 port 53 over UDP)",
    ),
    (
        "vpn",
        {"method": "flagged_app", "remote": "", "port": 0, "proto": "", "process": "openvpn"},
        "vpn",
        "(a flagged app (a VPN client, Tor or a proxy): by the program openvpn)",
    ),
    (
        "vpn",
        {"method": "tunnel", "remote": "", "port": 0, "proto": "", "interface": "wg0"},
        "vpn",
        "(a tunnel (a VPN interface such as tun or wg): interface wg0)",
    ),
    (
        None,
        {"method": "dns_elsewhere", "remote": "192.0.2.53", "port": 53},
        "dns_elsewhere",
        "(plain DNS to a server other than the filter: to 192.0.2.53 port 53)",
    ),
]


@pytest.mark.parametrize(
    ("category", "detail", "key", "words"),
    BYPASS_WORDS,
    ids=[f"{c[1]['method']}-{c[0]}" for c in BYPASS_WORDS],
)
def test_bypass_methods_are_worded(
    db: Database, category: str | None, detail: dict[str, Any], key: str, words: str
) -> None:
    fields: dict[str, Any] = {"detail": detail} if category is None else {
        "detail": detail, "category": category
    }  # fmt: skip
    run(db, [(T0, event("bypass", at=T0, **fields), {})])
    assert open_alerts(db) == [("bypass", key, 4, 1, "lt-042")]
    assert summaries(db, "bypass") == [
        f"Pupil laptop cape-primary/lt-042 tried to get round the filter {words}."
    ]


# --- [rules] keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"concern": {"severity": 0}}, "[rules.concern] severity = 0: must be at least 1"),
        ({"concern": {"severity": 6}}, "[rules.concern] severity = 6: must be at most 5"),
        ({"concern": {"enabled": "yes"}}, '[rules.concern] enabled = "yes": must be true or false'),
        ({"concern": {"colour": 1}}, "[rules.concern] colour = 1: is not a known key"),
        (
            {"health": {"filter_failed_severity": 9}},
            "[rules.health] filter_failed_severity = 9: must be at most 5",
        ),
        (
            {"health": {"spool_dropped_severity": True}},
            "[rules.health] spool_dropped_severity = true: must be an integer",
        ),
    ],
)
def test_new_rule_keys_are_strict(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(raw)
    assert message in str(info.value)
