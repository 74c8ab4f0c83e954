"""Each blocked attempt is counted once: a "blocked" event and the summary that counts the same
attempt again (same device, client and category, the event's `at` in the summary's span) add
up to the attempts made, in either order, one by one or in one batch; on SQLite and PostgreSQL.

Reports are stored as ingest stores them (tests/test_hub_rules_support.add_report) and judged
by the real RuleEngine; the counting rule is hub/rules/attempts.py's docstring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from hub.model import StoredReport
from hub.rules import RuleEngine, RulesConfig
from hub.store import Database
from tests.test_hub_rules_support import (
    MINUTE,
    T0,
    RecordingListener,
    add_report,
    open_alerts,
    open_db,
)

A = {"ip": "10.0.3.17", "group": "pupils"}
B = {"ip": "10.0.3.18", "group": "pupils"}
PI = {"device": "pi-1", "device_class": "sinkhole", "group": None}
LAPTOP: dict[str, Any] = {}
WINDOW = 5 * MINUTE


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def pi_summary(
    blocked: list[tuple[str, str, int]],
    client: dict[str, str] = A,
    start: int = T0,
    categories: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A summary of one client's window [start, start + 5 minutes], as hedgerow-dns sends it."""
    counted: dict[str, int] = {}
    for _, category, n in blocked:
        counted[category] = counted.get(category, 0) + n
    return {
        "v": 1,
        "source": "dns",
        "start": start,
        "end": start + WINDOW,
        "client": client,
        "counts": {"blocked": sum(n for _, _, n in blocked), "resolved": 20},
        "categories": counted if categories is None else categories,
        "blocked": [{"name": n, "category": c, "count": k} for n, c, k in blocked],
        "first_seen": start + 1_000,
        "last_seen": start + WINDOW - 1_000,
    }


def pi_event(
    category: str, name: str, at: int, client: dict[str, str] | None = A
) -> dict[str, Any]:
    """The immediate "blocked" event hedgerow-dns sends for the first lookup of a name."""
    doc: dict[str, Any] = {"v": 1, "type": "blocked", "category": category, "name": name}
    doc |= {"at": at, "count": 1}
    if client is not None:
        doc["client"] = client
    return doc


@dataclass(frozen=True)
class Step:
    """One report: its payload, the device's time on its header and the device it came from."""

    payload: dict[str, Any]
    time_ms: int
    options: dict[str, Any] = field(default_factory=lambda: dict(PI))


def event_at(category: str, name: str, at: int, **kw: Any) -> Step:
    client = kw.pop("client", A)
    return Step(pi_event(category, name, at, client), at, kw.pop("options", dict(PI)))


def summary_at(blocked: list[tuple[str, str, int]], start: int = T0, **kw: Any) -> Step:
    options = kw.pop("options", dict(PI))
    return Step(pi_summary(blocked, start=start, **kw), start + WINDOW, options)


@dataclass(frozen=True)
class Case:
    """Steps in arrival order; what the attempts table must sum to per (client, category); the
    open alerts as (key, severity, count: the attempts the alert stands for); words each
    alert's sentence must hold."""

    name: str
    steps: list[Step]
    totals: dict[tuple[str | None, str], int]
    alerts: list[tuple[str, int, int]]
    words: tuple[str, ...] = ()
    rules: RulesConfig = field(default_factory=RulesConfig)


ADULT = "adult.example"
CASINO = "casino.example"
CANARY = "use-application-dns.net"
KEY_A = "@10.0.3.17"
KEY_B = "@10.0.3.18"

CASES = [
    Case(
        "one adult lookup: event, then its summary",
        [event_at("adult", ADULT, T0 + MINUTE), summary_at([(ADULT, "adult", 1)])],
        {(A["ip"], "adult"): 1},
        [("adult" + KEY_A, 4, 1)],
        ("tried to reach an adult site; it was blocked (adult.example).",),
    ),
    Case(
        "one adult lookup: the summary, then the event re-sent late",
        [summary_at([(ADULT, "adult", 1)]), event_at("adult", ADULT, T0 + MINUTE)],
        {(A["ip"], "adult"): 1},
        [("adult" + KEY_A, 4, 1)],
        ("tried to reach an adult site; it was blocked",),
    ),
    Case(
        "two gambling lookups stay below 3 in 10",
        [event_at("gambling", CASINO, T0 + MINUTE), summary_at([(CASINO, "gambling", 2)])],
        {(A["ip"], "gambling"): 2},
        [],
    ),
    Case(
        "three gambling lookups say 3",
        [event_at("gambling", CASINO, T0 + MINUTE), summary_at([(CASINO, "gambling", 3)])],
        {(A["ip"], "gambling"): 3},
        [("gambling" + KEY_A, 3, 3)],
        ("tried to reach gambling sites 3 times; all were blocked (casino.example).",),
    ),
    Case(
        "three adult lookups say 3",
        [event_at("adult", ADULT, T0 + MINUTE), summary_at([(ADULT, "adult", 3)])],
        {(A["ip"], "adult"): 3},
        [("adult" + KEY_A, 4, 3)],  # opened by the event (1), the summary adds 2
        ("tried to reach adult sites 3 times; all were blocked",),
    ),
    Case(
        "three gambling lookups over two windows say 3",
        [
            event_at("gambling", CASINO, T0 + MINUTE),
            summary_at([(CASINO, "gambling", 2)]),
            event_at("gambling", CASINO, T0 + WINDOW + MINUTE),
            summary_at([(CASINO, "gambling", 1)], start=T0 + WINDOW),
        ],
        {(A["ip"], "gambling"): 3},
        [("gambling" + KEY_A, 3, 3)],
        ("tried to reach gambling sites 3 times in 10 minutes",),
    ),
    Case(
        "an event outside the summary's span is an attempt of its own",
        [event_at("adult", ADULT, T0 - 3 * MINUTE), summary_at([(ADULT, "adult", 1)])],
        {(A["ip"], "adult"): 2},
        [("adult" + KEY_A, 4, 2)],
    ),
    Case(
        "clients behind one Pi are matched apart",
        [event_at("adult", ADULT, T0 + MINUTE), summary_at([(ADULT, "adult", 1)], client=B)],
        {(A["ip"], "adult"): 1, (B["ip"], "adult"): 1},
        [("adult" + KEY_A, 4, 1), ("adult" + KEY_B, 4, 1)],
    ),
    Case(
        "a laptop's event and summary",
        [
            event_at("adult", ADULT, T0 + MINUTE, client=None, options=LAPTOP),
            summary_at([(ADULT, "adult", 1)], options=LAPTOP),
        ],
        {(None, "adult"): 1},
        [("adult", 4, 1)],
    ),
    Case(
        "an event on the boundary of two summaries is counted once",
        [
            event_at("adult", ADULT, T0 + WINDOW),
            summary_at([(ADULT, "adult", 1)]),
            summary_at([(ADULT, "adult", 1)], start=T0 + WINDOW),
        ],
        {(A["ip"], "adult"): 2},
        [("adult" + KEY_A, 4, 2)],
    ),
    Case(
        "an alias is read as its category",
        [summary_at([("x.example", "porn", 1)])],
        {(A["ip"], "adult"): 1},
        [("adult" + KEY_A, 4, 1)],
    ),
    Case(
        "SafeSearch and ECH answers are not attempts",
        [summary_at([], categories={"safesearch": 4, "youtube": 2, "ech": 3})],
        {},
        [],
        rules=replace(RulesConfig(), blocked=replace(RulesConfig().blocked, other_severity=3)),
    ),
    Case(
        "the filter's anti-bypass answer raises a bypass alert",
        [summary_at([(CANARY, "bypass", 1)])],
        {(A["ip"], "bypass"): 1},
        [("bypass" + KEY_A, 4, 1)],
        (
            "tried to get round the filter with encrypted DNS or a private relay "
            "(use-application-dns.net); it was blocked.",
        ),
    ),
    Case(
        "an immediate anti-bypass event and its summary: one bypass finding",
        [event_at("bypass", CANARY, T0 + MINUTE), summary_at([(CANARY, "bypass", 1)])],
        {(A["ip"], "bypass"): 1},
        [("bypass" + KEY_A, 4, 1)],
    ),
]


def store(db: Database, step: Step) -> StoredReport:
    return add_report(db, step.payload, time_ms=step.time_ms, **step.options)


def run_one_by_one(db: Database, engine: RuleEngine, steps: list[Step]) -> None:
    for step in steps:
        with db.transaction():
            engine.evaluate(db, store(db, step))


def run_as_one_batch(db: Database, engine: RuleEngine, steps: list[Step]) -> None:
    with db.transaction():
        engine.evaluate_batch(db, [store(db, step) for step in steps])


def totals(db: Database, by_client: bool) -> dict[tuple[str | None, str], int]:
    """What the attempts table sums to per (client, category); per category for a laptop."""
    found: dict[tuple[str | None, str], int] = {}
    for ip, category, n in db.execute("SELECT client_ip, category, count FROM attempts"):
        key = (ip if by_client else None, str(category))
        found[key] = found.get(key, 0) + int(n)
    return {key: n for key, n in found.items() if n}


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "one batch"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_attempt_is_counted_once(db: Database, case: Case, batched: bool) -> None:
    engine = RuleEngine(case.rules, RecordingListener())
    (run_as_one_batch if batched else run_one_by_one)(db, engine, case.steps)
    assert not engine.failures
    laptop = all(not s.options for s in case.steps)
    assert totals(db, by_client=not laptop) == case.totals
    found = [(key, severity, count) for _, key, severity, count, _ in open_alerts(db)]
    assert found == sorted(case.alerts)
    texts = [str(row[0]) for row in db.execute("SELECT summary FROM alerts")]
    for words in case.words:
        assert any(words in text for text in texts), texts


def test_a_summary_gives_way_to_the_events_it_covers_in_the_table(db: Database) -> None:
    """The attempts table keeps a summary's whole count and sets the events it covers to 0."""
    engine = RuleEngine(RulesConfig(), RecordingListener())
    steps = [event_at("gambling", CASINO, T0 + MINUTE), summary_at([(CASINO, "gambling", 2)])]
    run_one_by_one(db, engine, steps)
    rows = db.execute(
        "SELECT r.kind, a.count FROM attempts a JOIN reports r ON r.id = a.report_id ORDER BY r.id"
    )
    assert [(kind, int(n)) for kind, n in rows] == [("event", 0), ("summary", 2)]
