"""The DB-backed replay guard and idempotent report inserts, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest

from common.wire import Header, Kind, OpenError, SuiteId
from hub.store import Database
from hub.store.replay_guard import StoreReplayGuard
from hub.store.reports import NewReport, insert_reports


def header(seq: int, device: str = "lt-1") -> Header:
    """A header for seq."""
    return Header(Kind.SUMMARY, SuiteId.X25519, "site", device, seq, 0, b"k" * 8)


def digest(text: str) -> bytes:
    """A stand-in envelope digest."""
    return hashlib.sha256(text.encode()).digest()


def stored(seq: int, text: str, device: str = "lt-1") -> NewReport:
    """A report row for seq with the digest of text."""
    return NewReport("site", device, seq, "summary", digest(text), 0, 0, None, None, "{}")


def test_replay_rules_over_the_table(db: Database) -> None:
    insert_reports(db, [stored(s, f"e{s}") for s in (1, 2, 200)])
    guard = StoreReplayGuard(db, window=100)
    assert guard.check(header(2), digest("e2")) is True  # exact redelivery: duplicate
    with pytest.raises(OpenError, match="already used"):
        guard.check(header(2), digest("other"))  # same seq, other bytes: replay
    with pytest.raises(OpenError, match="older than the replay window"):
        guard.check(header(50), digest("e50"))  # never stored and below 200 - 100
    assert guard.check(header(150), digest("e150")) is False  # within the window, new
    assert guard.check(header(201), digest("e201")) is False  # ahead: new, no lookup needed
    guard.accept(header(201), digest("e201"))
    assert guard.check(header(201), digest("e201")) is True  # second copy in the same batch
    assert guard.check(header(1, device="lt-2"), digest("x")) is False  # unknown device state
    guard.forget("site", "lt-1")
    assert guard.check(header(201), digest("e201")) is False  # 201 was never committed


def test_insert_is_idempotent_and_reports_which_rows_were_new(db: Database) -> None:
    first = insert_reports(db, [stored(1, "a"), stored(2, "b")])
    assert set(first) == {("site", "lt-1", 1), ("site", "lt-1", 2)}
    again = insert_reports(db, [stored(2, "b"), stored(3, "c")])
    assert set(again) == {("site", "lt-1", 3)}
    assert db.execute("SELECT COUNT(*) FROM reports")[0][0] == 3
