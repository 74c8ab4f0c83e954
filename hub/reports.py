"""The weekly digest and the governors' annual review: aggregates only. No query here selects a
device name, IP address, pupil or alert summary; every table is counts by role, class, group,
category, severity, rule, outcome, result or month."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hub.alert_triage import OUTCOMES
from hub.alerts import HUB_ACTOR
from hub.checks import KINDS, RESULTS, read_checks
from hub.store import Database

SILENT_MS = 7 * 86_400_000  # a device not heard from in a week is "silent" in the gaps table
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


class ReportError(ValueError):
    """A week or year that cannot be reported on."""


@dataclass(frozen=True, slots=True)
class Table:
    """One table of a report: a name (its CSV's), a caption, headers and rows."""

    name: str
    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str | int, ...], ...]


@dataclass(frozen=True, slots=True)
class Period:
    """[start_ms, end_ms) with how people name it."""

    label: str
    start_ms: int
    end_ms: int

    @property
    def first_day(self) -> str:
        """The first day, YYYY-MM-DD (UTC)."""
        return datetime.fromtimestamp(self.start_ms / 1000, UTC).strftime("%Y-%m-%d")

    @property
    def last_day(self) -> str:
        """The last day, YYYY-MM-DD (UTC): the day before end_ms."""
        return datetime.fromtimestamp((self.end_ms - 1) / 1000, UTC).strftime("%Y-%m-%d")


def _ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def week_period(text: str | None, now_ms: int) -> Period:
    """The ISO week `YYYY-Www` (UTC), or the current one."""
    if text is None or text == "":
        today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
        year, week, _ = today.isocalendar()
    else:
        match = _WEEK.match(text)
        if not match:
            raise ReportError(f"week {text!r}: must be YYYY-Www, e.g. 2026-W09")
        year, week = int(match[1]), int(match[2])
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ReportError(f"week {year}-W{week:02d} does not exist") from None
    return Period(f"{year}-W{week:02d}", _ms(monday), _ms(monday + timedelta(days=7)))


def academic_year(year: int | None, now_ms: int) -> Period:
    """The academic year starting 1 September of `year` (UTC), to 31 August: "2025-26"."""
    if year is None:
        today = datetime.fromtimestamp(now_ms / 1000, UTC).date()
        year = today.year if today.month >= 9 else today.year - 1
    if not 2000 <= year <= 2999:
        raise ReportError(f"year {year}: out of range")
    return Period(
        f"{year}-{(year + 1) % 100:02d}", _ms(date(year, 9, 1)), _ms(date(year + 1, 9, 1))
    )


def _months(period: Period) -> list[tuple[str, int, int]]:
    """(YYYY-MM, start_ms, end_ms) of each month in the period."""
    out = []
    day = datetime.fromtimestamp(period.start_ms / 1000, UTC).date().replace(day=1)
    while _ms(day) < period.end_ms:
        following = (day + timedelta(days=32)).replace(day=1)
        out.append((day.strftime("%Y-%m"), _ms(day), _ms(following)))
        day = following
    return out


def _severity_word(severity: int) -> str:
    return {1: "information", 2: "low", 3: "medium", 4: "high", 5: "urgent"}.get(
        severity, str(severity)
    )


# --- The alert queries, in one place (outcome column and trail rows of migration 5). ---


def _alerts_by_severity_rule(db: Database, p: Period) -> Table:
    rows = db.execute(
        "SELECT severity, rule, COUNT(*) FROM alerts WHERE first_seen_ms >= ? AND "
        "first_seen_ms < ? GROUP BY severity, rule ORDER BY severity DESC, rule",
        (p.start_ms, p.end_ms),
    )
    return Table(
        "alerts",
        "Alerts raised, by severity and rule",
        ("Severity", "Rule", "Alerts"),
        tuple((_severity_word(int(r[0])), r[1], int(r[2])) for r in rows),
    )


def _outcomes(db: Database, p: Period) -> Table:
    rows = db.execute(
        "SELECT severity, status, outcome, COUNT(*) FROM alerts WHERE first_seen_ms >= ? AND "
        "first_seen_ms < ? GROUP BY severity, status, outcome ORDER BY severity DESC, status",
        (p.start_ms, p.end_ms),
    )
    out: list[tuple[str | int, ...]] = []
    for severity, status, outcome, count in rows:
        word = str(OUTCOMES.get(outcome, outcome)) if outcome else f"not closed ({status})"
        if status == "closed" and not outcome:
            word = "closed without an outcome"
        out.append((_severity_word(int(severity)), word, int(count)))
    return Table(
        "outcomes",
        "Alerts by severity and outcome",
        ("Severity", "Outcome", "Alerts"),
        tuple(out),
    )


def _first_action(db: Database, p: Period) -> Table:
    """Median minutes from an alert being raised to the first person's action on it (the
    hub's own trail rows, HUB_ACTOR, are not actions)."""
    rows = db.execute(
        "SELECT a.severity, a.first_seen_ms, MIN(t.at_ms) FROM alerts a JOIN alert_actions t "
        "ON t.alert_id = a.id WHERE a.first_seen_ms >= ? AND a.first_seen_ms < ? "
        "AND t.actor <> ? GROUP BY a.id, a.severity, a.first_seen_ms",
        (p.start_ms, p.end_ms, HUB_ACTOR),
    )
    waits: dict[int, list[float]] = {}
    for severity, first_ms, acted_ms in rows:
        waits.setdefault(int(severity), []).append(max(0, int(acted_ms) - int(first_ms)) / 60_000)
    every = [w for ws in waits.values() for w in ws]
    out: list[tuple[str | int, ...]] = [
        (_severity_word(s), len(ws), f"{statistics.median(ws):.0f}")
        for s, ws in sorted(waits.items(), reverse=True)
    ]
    if every:
        out.append(("all", len(every), f"{statistics.median(every):.0f}"))
    return Table(
        "first_action",
        "Median time to first action (minutes), alerts acted on",
        ("Severity", "Alerts acted on", "Median minutes"),
        tuple(out),
    )


def _open_items(db: Database, p: Period) -> Table:
    rows = db.execute(
        "SELECT status, severity, COUNT(*) FROM alerts WHERE status <> 'closed' AND "
        "first_seen_ms < ? GROUP BY status, severity ORDER BY status, severity DESC",
        (p.end_ms,),
    )
    return Table(
        "open_items",
        "Alerts still open or acknowledged",
        ("Status", "Severity", "Alerts"),
        tuple((r[0], _severity_word(int(r[1])), int(r[2])) for r in rows),
    )


def _blocked_by_category(db: Database, p: Period) -> Table:
    rows = db.execute(
        "SELECT category, SUM(count) FROM attempts WHERE time_ms >= ? AND time_ms < ? "
        "GROUP BY category ORDER BY SUM(count) DESC, category",
        (p.start_ms, p.end_ms),
    )
    return Table(
        "blocked",
        "Blocked attempts by category",
        ("Category", "Attempts"),
        tuple((r[0], int(r[1])) for r in rows),
    )


def attempt_group_sql(none: str) -> str:
    """SQL for the group blocked attempts are counted under, in a query joining `attempts a`
    and `devices d`: the reporting client's group (stored at ingest from its `client.group`: a
    DNS filter reports every group of the school through one device, so the device's group
    will not do), else the device's, else `none`."""
    return f"COALESCE(a.client_group, d.grp, '{none}')"


def _blocked_by_group(db: Database, p: Period) -> Table:
    group = attempt_group_sql("(no group)")
    rows = db.execute(
        f"SELECT {group}, a.category, SUM(a.count) FROM attempts a "
        "LEFT JOIN devices d ON d.site = a.site AND d.device = a.device "
        "WHERE a.time_ms >= ? AND a.time_ms < ? "
        f"GROUP BY {group}, a.category",
        (p.start_ms, p.end_ms),
    )
    ordered = sorted(
        ((str(g), str(c), int(n)) for g, c, n in rows), key=lambda r: (r[0], -r[2], r[1])
    )
    return Table(
        "blocked_by_group",
        "Categories blocked, per group",
        ("Group", "Category", "Attempts"),
        tuple(ordered),
    )


def _checks_summary(db: Database, p: Period) -> Table:
    counts: dict[tuple[str, str], int] = {}
    for check in read_checks(db, p.start_ms, p.end_ms):
        key = (KINDS[check.kind], RESULTS[check.result])
        counts[key] = counts.get(key, 0) + 1
    return Table(
        "checks_done",
        "Checks done, by kind and result",
        ("Kind", "Result", "Checks"),
        tuple((k, r, n) for (k, r), n in sorted(counts.items())),
    )


def _checks_list(db: Database, p: Period) -> Table:
    """Each check with its date, what, result and action: no one's name."""
    return Table(
        "checks",
        "Checks done and their results",
        ("Date", "Kind", "What", "Result", "Action taken"),
        tuple(
            (
                datetime.fromtimestamp(c.at_ms / 1000, UTC).strftime("%Y-%m-%d"),
                KINDS[c.kind],
                c.what,
                RESULTS[c.result],
                c.action or "none recorded",
            )
            for c in reversed(read_checks(db, p.start_ms, p.end_ms))
        ),
    )


def _roles(db: Database) -> Table:
    rows = db.execute(
        "SELECT role, COUNT(*) FROM web_users WHERE disabled_ms IS NULL GROUP BY role ORDER BY role"
    )
    return Table(
        "roles",
        "Dashboard accounts by role",
        ("Role", "Accounts"),
        tuple((r[0], int(r[1])) for r in rows),
    )


def _devices(db: Database, p: Period) -> Table:
    rows = db.execute(
        "SELECT class, COALESCE(grp, '(no group)'), COUNT(*) FROM devices WHERE "
        "enrolled_ms < ? AND (revoked_ms IS NULL OR revoked_ms >= ?) "
        "GROUP BY class, COALESCE(grp, '(no group)') ORDER BY class, COALESCE(grp, '(no group)')",
        (p.end_ms, p.start_ms),
    )
    return Table(
        "devices",
        "Devices covered during the year, by class and group",
        ("Class", "Group", "Devices"),
        tuple((r[0], r[1], int(r[2])) for r in rows),
    )


def _policy_changes(db: Database, p: Period) -> Table:
    out = []
    for month, start, end in _months(p):
        rows = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT device) FROM policies WHERE created_ms >= ? AND "
            "created_ms < ?",
            (start, end),
        )
        if int(rows[0][0]):
            out.append((month, int(rows[0][0]), int(rows[0][1])))
    return Table(
        "policy_changes",
        "Filtering policy versions signed, by month",
        ("Month", "Policy versions", "Devices they went to"),
        tuple(out),
    )


def _gaps(db: Database, p: Period, now_ms: int) -> Table:
    out: list[tuple[str | int, ...]] = []
    for month, start, end in _months(p):
        if start > now_ms:
            break
        if not read_checks(db, start, end):
            out.append(("No filtering check recorded", month))
    silent = db.execute(
        "SELECT COUNT(*) FROM devices WHERE revoked_ms IS NULL AND "
        "(last_seen_ms IS NULL OR last_seen_ms < ?)",
        (now_ms - SILENT_MS,),
    )
    if int(silent[0][0]):
        out.append(("Devices not heard from in 7 days (now)", int(silent[0][0])))
    failed = [c for c in read_checks(db, p.start_ms, p.end_ms) if c.result != "pass"]
    unactioned = [c for c in failed if not c.action]
    if unactioned:
        out.append(("Checks not passed with no action recorded", len(unactioned)))
    ungrouped = db.execute("SELECT COUNT(*) FROM devices WHERE revoked_ms IS NULL AND grp IS NULL")
    if int(ungrouped[0][0]):
        out.append(("Devices in no group (no group's filtering applies)", int(ungrouped[0][0])))
    return Table("gaps", "Gaps found", ("Gap", "Month or number"), tuple(out))


def weekly(db: Database, period: Period) -> list[Table]:
    """The weekly digest's tables."""
    return [
        _alerts_by_severity_rule(db, period),
        _outcomes(db, period),
        _open_items(db, period),
        _blocked_by_category(db, period),
        _checks_summary(db, period),
    ]


def annual(db: Database, period: Period, now_ms: int) -> list[Table]:
    """The governors' annual review's tables, in the order the page shows them."""
    return [
        _roles(db),
        _devices(db, period),
        _checks_list(db, period),
        _checks_summary(db, period),
        _outcomes(db, period),
        _first_action(db, period),
        _blocked_by_group(db, period),
        _policy_changes(db, period),
        _gaps(db, period, now_ms),
    ]
