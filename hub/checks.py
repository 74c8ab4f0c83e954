"""The checks register: each filtering check (a `hedgerow-dns selftest` run or a manual check
such as SWGfL Test Filtering) with when, who, what, result and action taken, and the
governors' sign-offs of the annual review. Append-only: nothing here updates or deletes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.store import Database

KINDS = {"selftest": "hedgerow-dns selftest", "manual": "Manual check"}
RESULTS = {"pass": "Passed", "partial": "Partly passed", "fail": "Failed"}
_LIMIT = 2000


class CheckError(ValueError):
    """A check or sign-off that cannot be recorded, with the reason for people."""


@dataclass(frozen=True, slots=True)
class Check:
    """One entry of the register."""

    id: int
    at_ms: int  # when the check was done
    recorded_ms: int
    recorded_by: str
    kind: str  # KINDS
    what: str
    result: str  # RESULTS
    passed: int | None
    failed: int | None
    action: str

    def to_json(self) -> dict[str, Any]:
        """The entry as the JSON API gives it."""
        return {
            "id": self.id,
            "at_ms": self.at_ms,
            "recorded_ms": self.recorded_ms,
            "recorded_by": self.recorded_by,
            "kind": self.kind,
            "what": self.what,
            "result": self.result,
            "passed": self.passed,
            "failed": self.failed,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class SignOff:
    """One signature of an annual review."""

    id: int
    year: str
    at_ms: int
    username: str
    role: str
    signed_as: str
    note: str


def _text(value: str, name: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise CheckError(f"{name} is required")
    if len(value) > _LIMIT:
        raise CheckError(f"{name} is longer than {_LIMIT} characters")
    return value


def add_check(
    db: Database,
    *,
    at_ms: int,
    recorded_ms: int,
    recorded_by: str,
    kind: str,
    what: str,
    result: str,
    action: str,
    passed: int | None = None,
    failed: int | None = None,
) -> int:
    """Append a check; return its id. CheckError if a field is missing or unknown."""
    if kind not in KINDS:
        raise CheckError(f"kind {kind!r}: must be one of {', '.join(KINDS)}")
    if result not in RESULTS:
        raise CheckError(f"result {result!r}: must be one of {', '.join(RESULTS)}")
    if at_ms <= 0 or at_ms > recorded_ms + 86_400_000:
        raise CheckError("the date of the check must not be in the future")
    return db.insert(
        "INSERT INTO checks (at_ms, recorded_ms, recorded_by, kind, what, result, passed, "
        "failed, action) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            at_ms,
            recorded_ms,
            recorded_by,
            kind,
            _text(what, "what was checked", required=True),
            result,
            passed,
            failed,
            _text(action, "the action taken", required=False),
        ),
    )


def selftest_check(summary: dict[str, Any]) -> tuple[str, str, int, int]:
    """(what, result, passed, failed) of `hedgerow-dns selftest --json`'s summary object."""
    try:
        passed = int(summary["passed"])
        failed = int(summary["failed"])
        untested = [str(g) for g in summary.get("not_testable", [])]
        server = str(summary.get("server", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(f"not a selftest summary: {exc}") from None
    if passed < 0 or failed < 0:
        raise CheckError("not a selftest summary: negative counts")
    result = "pass" if failed == 0 and passed > 0 else ("fail" if passed == 0 else "partial")
    if result == "pass" and untested:
        result = "partial"
    what = f"selftest against {server}: {passed} passed, {failed} failed"
    if untested:
        what += f"; not tested from this host: {', '.join(untested)}"
    return what, result, passed, failed


def _check_of(row: Any) -> Check:
    return Check(
        int(row[0]),
        int(row[1]),
        int(row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        None if row[7] is None else int(row[7]),
        None if row[8] is None else int(row[8]),
        row[9],
    )


_COLUMNS = "id, at_ms, recorded_ms, recorded_by, kind, what, result, passed, failed, action"


def read_checks(db: Database, start_ms: int = 0, end_ms: int | None = None) -> list[Check]:
    """Checks done in [start_ms, end_ms), newest first."""
    end = end_ms if end_ms is not None else 2**62
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM checks WHERE at_ms >= ? AND at_ms < ? ORDER BY at_ms DESC, id DESC",
        (start_ms, end),
    )
    return [_check_of(r) for r in rows]


def sign_review(
    db: Database, year: str, at_ms: int, username: str, role: str, signed_as: str, note: str
) -> int:
    """Append a signature of the review of `year`; return its id."""
    return db.insert(
        "INSERT INTO review_signoffs (year, at_ms, username, role, signed_as, note) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            year,
            at_ms,
            username,
            role,
            _text(signed_as, "the name and capacity signed as", required=True),
            _text(note, "the note", required=False),
        ),
    )


def signoffs(db: Database, year: str) -> list[SignOff]:
    """The review's signatures, oldest first."""
    rows = db.execute(
        "SELECT id, year, at_ms, username, role, signed_as, note FROM review_signoffs "
        "WHERE year = ? ORDER BY id",
        (year,),
    )
    return [SignOff(int(r[0]), r[1], int(r[2]), r[3], r[4], r[5], r[6]) for r in rows]
