"""The alert queue's query on a real SQLite hub database: order, cursor paging, filters, counts,
and a limited DSL's groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import alerts
from hub.store import Database, sqlite_url
from hub.web.permissions import Principal, Role
from hub.web.queue import QueueError, QueueFilter, read_queue

DSL = Principal(1, "dana", Role.DSL)
LIMITED = Principal(2, "lee", Role.DSL_LIMITED, frozenset({"y7"}))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database of each kind with alerts of every severity, in two groups, seen
    at times chosen so severity and age both decide the order."""
    url = sqlite_url(tmp_path / "hub.db")
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    database = Database(url)
    database.migrate()
    # (severity, group, first seen): two alerts of severity 4 to show age breaking the tie.
    for n, (severity, group, at) in enumerate(
        [
            (3, "y7", 500),
            (4, "y8", 300),
            (5, "y7", 900),
            (4, "y7", 100),
            (1, "y8", 50),
            (2, None, 700),
            (5, "y8", 800),
        ]
    ):
        alerts.record(
            database,
            alerts.Finding(
                rule="blocked-content" if n % 2 else "silent-device",
                severity=severity,
                site="school",
                device=f"d{n}",
                device_class="laptop",
                group=group,
                key="k",
                summary=f"alert {n}",
                at_ms=at,
            ),
            alerts.AlertPolicy(),
        )
    try:
        yield database
    finally:
        database.close()


def _order(db: Database, who: Principal, f: QueueFilter, size: int) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    cursor = None
    while True:
        page = read_queue(db, who, f, cursor, limit=size)
        seen += [(a.severity, a.first_seen_ms) for a in page.alerts]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


@pytest.mark.parametrize("size", [1, 2, 3, 50])
def test_severity_then_age_across_pages(db: Database, size: int) -> None:
    assert _order(db, DSL, QueueFilter(), size) == [
        (5, 800), (5, 900), (4, 100), (4, 300), (3, 500), (2, 700), (1, 50),
    ]  # fmt: skip


def test_counts_filters_and_groups(db: Database) -> None:
    page = read_queue(db, DSL, QueueFilter(severity=5))
    assert [a.severity for a in page.alerts] == [5, 5]
    assert page.counts == {5: 2, 4: 2, 3: 1, 2: 1, 1: 1}  # the counts ignore the severity filter
    assert [a.group for a in read_queue(db, DSL, QueueFilter(group="y8")).alerts] == ["y8"] * 3
    assert {a.rule for a in read_queue(db, DSL, QueueFilter(rule="silent-device")).alerts} == {
        "silent-device"
    }
    limited = read_queue(db, LIMITED, QueueFilter())
    assert {a.group for a in limited.alerts} == {"y7"}
    assert limited.counts == {5: 1, 4: 1, 3: 1}  # not even another group's counts
    alerts.acknowledge(db, limited.alerts[0].id, 1000, "lee")
    assert len(read_queue(db, LIMITED, QueueFilter()).alerts) == 2
    assert len(read_queue(db, LIMITED, QueueFilter(status="all")).alerts) == 3


@pytest.mark.parametrize("bad", [{"status": "gone"}, {"severity": 6}, {"severity": 0}])
def test_bad_filters_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(QueueError):
        QueueFilter(**bad)  # type: ignore[arg-type]


def test_bad_cursor_is_refused(db: Database) -> None:
    with pytest.raises(QueueError):
        read_queue(db, DSL, QueueFilter(), cursor="not-a-cursor")


def test_filters_survive_in_links() -> None:
    assert QueueFilter(status="all", group="y7", severity=4).query() == {
        "status": "all", "group": "y7", "severity": "4",
    }  # fmt: skip
