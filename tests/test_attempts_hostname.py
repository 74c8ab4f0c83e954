"""Blocked attempts behind a Pi are grouped by the device the filter named (its hostname, else
its MAC, else its address): two devices that used one address within a window are two alerts,
one device that moved address is one, a client with no name is grouped by address as before,
and each lookup is still counted once; on SQLite and PostgreSQL, through the real RuleEngine
(and once through the real `hedgerow-hub serve`: hub.ingest.record writes the same keys)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.wire import Kind
from hub.rules import RuleEngine, RulesConfig
from hub.rules.wording import client_identity, client_name
from hub.store import Database
from tests.hub_ingest_fixtures import SimDevice, enrol, make_hub, publisher, query, serving
from tests.services import Mosquitto
from tests.test_attempts_once import pi_event, pi_summary
from tests.test_hub_rules_support import (
    MINUTE,
    SITE,
    T0,
    RecordingListener,
    add_report,
    open_alerts,
    open_db,
)
from tests.waiting import wait_until

PI: dict[str, Any] = {"device": "pi-1", "device_class": "sinkhole", "group": None}
WINDOW = 5 * MINUTE
CASINO = "casino.example"
ADULT = "adult.example"
MAC_A = "02:00:5e:10:00:01"


def named(ip: str, hostname: str | None = None, mac: str | None = None) -> dict[str, str]:
    """A summary's or event's `client`, as hedgerow-dns writes it (docs/protocol.md 6.4)."""
    client = {"ip": ip, "group": "pupils"}
    if hostname is not None:
        client["hostname"] = hostname
    if mac is not None:
        client["mac"] = mac
    return client


LT42_AT_17 = named("10.0.3.17", "lt-042")
LT42_AT_18 = named("10.0.3.18", "lt-042")
LT43_AT_17 = named("10.0.3.17", "lt-043")
NO_NAME_17 = named("10.0.3.17")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


@dataclass(frozen=True)
class Step:
    """One report from the Pi: its payload and the time on its header."""

    payload: dict[str, Any]
    time_ms: int


def summary(blocked: list[tuple[str, str, int]], client: dict[str, str], start: int) -> Step:
    return Step(pi_summary(blocked, client=client, start=start), start + WINDOW)


def event(category: str, name: str, at: int, client: dict[str, str]) -> Step:
    return Step(pi_event(category, name, at, client), at)


@dataclass(frozen=True)
class Case:
    """Steps in arrival order; the attempts table's sums per client_key and category; the open
    alerts as (dedup key, count); words each alert's sentence must hold."""

    name: str
    steps: list[Step]
    totals: dict[tuple[str, str], int]
    alerts: list[tuple[str, int]]
    words: tuple[str, ...] = field(default=())


CASES = [
    Case(
        "two devices on one address in one window are two devices: 2 + 2 stays below 3",
        [
            summary([(CASINO, "gambling", 2)], LT42_AT_17, T0),
            summary([(CASINO, "gambling", 2)], LT43_AT_17, T0 + WINDOW),
        ],
        {("name:lt-042", "gambling"): 2, ("name:lt-043", "gambling"): 2},
        [],
    ),
    Case(
        "two devices on one address: one adult alert each",
        [
            summary([(ADULT, "adult", 1)], LT42_AT_17, T0),
            summary([(ADULT, "adult", 1)], LT43_AT_17, T0 + WINDOW),
        ],
        {("name:lt-042", "adult"): 1, ("name:lt-043", "adult"): 1},
        [("adult@name:lt-042", 1), ("adult@name:lt-043", 1)],
        ("lt-042 (10.0.3.17, group pupils)", "lt-043 (10.0.3.17, group pupils)"),
    ),
    Case(
        "one device that moved address is one device: 2 + 1 is 3",
        [
            summary([(CASINO, "gambling", 2)], LT42_AT_17, T0),
            summary([(CASINO, "gambling", 1)], LT42_AT_18, T0 + WINDOW),
        ],
        {("name:lt-042", "gambling"): 3},
        [("gambling@name:lt-042", 3)],
        ("lt-042 (10.0.3.18, group pupils) behind", "3 times in 10 minutes"),
    ),
    Case(
        "a device name is case-blind and loses its trailing dot",
        [
            summary([(CASINO, "gambling", 2)], named("10.0.3.17", "LT-042"), T0),
            summary([(CASINO, "gambling", 1)], named("10.0.3.18", "lt-042."), T0 + WINDOW),
        ],
        {("name:lt-042", "gambling"): 3},
        [("gambling@name:lt-042", 3)],
    ),
    Case(
        "with no name, the MAC: a device that moved is one device",
        [
            summary([(CASINO, "gambling", 2)], named("10.0.3.17", mac=MAC_A), T0),
            summary([(CASINO, "gambling", 1)], named("10.0.3.18", mac=MAC_A), T0 + WINDOW),
        ],
        {(f"mac:{MAC_A}", "gambling"): 3},
        [(f"gambling@mac:{MAC_A}", 3)],
        ("A device at 10.0.3.18 (group pupils) behind",),
    ),
    Case(
        "with no name and no MAC, the address, as before: one address is one client",
        [
            summary([(CASINO, "gambling", 2)], NO_NAME_17, T0),
            summary([(CASINO, "gambling", 1)], NO_NAME_17, T0 + WINDOW),
        ],
        {("10.0.3.17", "gambling"): 3},
        [("gambling@10.0.3.17", 3)],
        ("A device at 10.0.3.17 (group pupils) behind",),
    ),
    Case(
        "a named device and an unnamed client on one address are apart",
        [
            summary([(CASINO, "gambling", 2)], LT42_AT_17, T0),
            summary([(CASINO, "gambling", 2)], NO_NAME_17, T0 + WINDOW),
        ],
        {("name:lt-042", "gambling"): 2, ("10.0.3.17", "gambling"): 2},
        [],
    ),
    Case(
        "a named device's event and its summary: one attempt",
        [
            event("adult", ADULT, T0 + MINUTE, LT42_AT_17),
            summary([(ADULT, "adult", 1)], LT42_AT_17, T0),
        ],
        {("name:lt-042", "adult"): 1},
        [("adult@name:lt-042", 1)],
    ),
    Case(
        "the summary first, then its event: one attempt",
        [
            summary([(ADULT, "adult", 1)], LT42_AT_17, T0),
            event("adult", ADULT, T0 + MINUTE, LT42_AT_17),
        ],
        {("name:lt-042", "adult"): 1},
        [("adult@name:lt-042", 1)],
    ),
    Case(
        "an event sent before ARP knew the MAC, and its summary with it: one attempt",
        [
            event("gambling", CASINO, T0 + MINUTE, NO_NAME_17),
            summary([(CASINO, "gambling", 2)], named("10.0.3.17", mac=MAC_A), T0),
        ],
        {(f"mac:{MAC_A}", "gambling"): 2},
        [],
    ),
    Case(
        "another device's summary on the address does not swallow an event",
        [
            event("adult", ADULT, T0 + MINUTE, LT43_AT_17),
            summary([(ADULT, "adult", 1)], LT42_AT_17, T0),
            summary([(ADULT, "adult", 1)], LT43_AT_17, T0),
        ],
        {("name:lt-042", "adult"): 1, ("name:lt-043", "adult"): 1},
        [("adult@name:lt-042", 1), ("adult@name:lt-043", 1)],
    ),
]


def totals(db: Database) -> dict[tuple[str, str], int]:
    """What the attempts table sums to per (client_key, category)."""
    found: dict[tuple[str, str], int] = {}
    for key, category, n in db.execute("SELECT client_key, category, count FROM attempts"):
        found[(str(key), str(category))] = found.get((str(key), str(category)), 0) + int(n)
    return {key: n for key, n in found.items() if n}


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "one batch"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_attempts_are_grouped_by_device(db: Database, case: Case, batched: bool) -> None:
    engine = RuleEngine(RulesConfig(), RecordingListener())
    if batched:
        with db.transaction():
            stored = [add_report(db, s.payload, time_ms=s.time_ms, **PI) for s in case.steps]
            engine.evaluate_batch(db, stored)
    else:
        for step in case.steps:
            with db.transaction():
                engine.evaluate(db, add_report(db, step.payload, time_ms=step.time_ms, **PI))
    assert not engine.failures
    assert totals(db) == case.totals
    assert [(key, count) for _, key, _, count, _ in open_alerts(db)] == sorted(case.alerts)
    texts = [str(row[0]) for row in db.execute("SELECT summary FROM alerts")]
    for words in case.words:
        assert any(words in text for text in texts), texts


def test_rows_from_before_the_migration_count_as_their_address(db: Database) -> None:
    """An attempts row with no client_key (written before migration 3) is its client_ip's."""
    db.execute(
        "INSERT INTO attempts (report_id, site, device, client_ip, category, count, time_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (10_000, SITE, "pi-1", "10.0.3.17", "gambling", 2, T0),
    )
    engine = RuleEngine(RulesConfig(), RecordingListener())
    with db.transaction():
        step = summary([(CASINO, "gambling", 1)], NO_NAME_17, T0)
        engine.evaluate(db, add_report(db, step.payload, time_ms=T0 + MINUTE, **PI))
    assert [(key, count) for _, key, _, count, _ in open_alerts(db)] == [("gambling@10.0.3.17", 3)]


@pytest.mark.parametrize(
    ("client", "identity", "name"),
    [
        (None, None, None),
        ({}, None, None),
        ({"ip": "10.0.3.17"}, "10.0.3.17", None),
        ({"ip": "2001:db8::34", "mac": "02-00-5E-10-00-01"}, "mac:02:00:5e:10:00:01", None),
        ({"ip": "10.0.3.17", "mac": " ", "hostname": "  "}, "10.0.3.17", None),
        ({"ip": "10.0.3.17", "mac": MAC_A, "hostname": " Lt-042. "}, "name:lt-042", "lt-042"),
        ({"ip": "10.0.3.17", "hostname": "a\x00b"}, "name:ab", "ab"),
        ({"ip": "10.0.3.17", "hostname": 42}, "10.0.3.17", None),
    ],
)
def test_client_identity(
    client: dict[str, Any] | None, identity: str | None, name: str | None
) -> None:
    assert client_identity(client) == identity
    assert client_name(client) == name


def test_ingest_writes_the_device_keys(tmp_path: Path, broker: Mosquitto) -> None:
    """Through the real hub: one address, two devices' adult lookups, two alerts; then one of
    them at a new address, still its alert."""
    hub = make_hub(tmp_path, broker.url, None)
    pi: SimDevice = enrol(hub, "pi-1", device_class="sinkhole")
    at = int(time.time() * 1000) - 10 * MINUTE
    reports = [
        pi_summary([(ADULT, "adult", 1)], client=LT42_AT_17, start=at),
        pi_summary([(ADULT, "adult", 1)], client=LT43_AT_17, start=at),
        pi_summary([(ADULT, "adult", 1)], client=LT42_AT_18, start=at + WINDOW),
    ]
    with serving(hub), publisher(broker.url) as pub:
        for seq, payload in enumerate(reports, 1):
            envelope = pi.envelope(payload, kind=Kind.SUMMARY, seq=seq, time_ms=payload["end"])
            pub.send(pi.topic(), envelope)
        wait_until(
            lambda: query(hub, "SELECT COUNT(*) FROM reports")[0][0] == len(reports),
            what="the summaries",
        )
        wait_until(
            lambda: query(hub, "SELECT COALESCE(SUM(count), 0) FROM alerts")[0][0] == 3,
            what="their alerts",
        )
    rows = query(hub, "SELECT client_key, client_name, client_ip FROM attempts ORDER BY report_id")
    assert [tuple(row) for row in rows] == [
        ("name:lt-042", "lt-042", "10.0.3.17"),
        ("name:lt-043", "lt-043", "10.0.3.17"),
        ("name:lt-042", "lt-042", "10.0.3.18"),
    ]
    alerts = query(hub, "SELECT dedup_key, count FROM alerts WHERE status = 'open'")
    assert sorted((str(k), int(n)) for k, n in alerts) == [
        ("adult@name:lt-042", 2),
        ("adult@name:lt-043", 1),
    ]
