"""The alert queue's reads: filtered, ordered by severity then age, paged by cursor; the counts
by severity above it; and the evidence behind one alert."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.alert_triage import TRIAGE_COLUMNS, Triage, triage_of
from hub.alerts import ALERT_COLUMNS, STATUS_FILTERS, AlertError, alert_of, get_alert
from hub.model import Alert
from hub.store import Database
from hub.web.permissions import Principal

PAGE_SIZE = 50
# The largest id a BIGINT holds: a larger number in a URL is no alert (not a database error).
MAX_ID = 2**63 - 1


class QueueError(ValueError):
    """A filter or cursor in the URL cannot be read."""


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """What the queue shows: the URL's query parameters, validated."""

    status: str = "open"
    site: str | None = None
    group: str | None = None
    rule: str | None = None
    severity: int | None = None
    assignee: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUS_FILTERS:
            raise QueueError(f"status must be one of {', '.join(STATUS_FILTERS)}")
        if self.severity is not None and not 1 <= self.severity <= 5:
            raise QueueError("severity must be 1 to 5")

    def query(self) -> dict[str, str]:
        """The filter as URL parameters (only those set), so links keep it."""
        pairs = {
            "status": self.status,
            "site": self.site,
            "group": self.group,
            "rule": self.rule,
            "severity": None if self.severity is None else str(self.severity),
            "assignee": self.assignee,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True, slots=True)
class QueuePage:
    """One page of the queue and the cursor of the next (None on the last page)."""

    alerts: list[Alert]
    next_cursor: str | None
    counts: dict[int, int] = field(default_factory=dict)  # severity -> alerts, all pages
    triage: dict[int, Triage] = field(default_factory=dict)  # alert id -> its triage state


def _where(principal: Principal, f: QueueFilter) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if f.status != "all":
        where.append("status = ?")
        params.append(f.status)
    filters = (("site", f.site), ("grp", f.group), ("rule", f.rule), ("assignee", f.assignee))
    for column, value in filters:
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if principal.limited:
        # A limited DSL never receives another group's alert, not even counted.
        groups = sorted(principal.groups)
        where.append(f"grp IN ({', '.join('?' * len(groups))})" if groups else "1 = 0")
        params.extend(groups)
    return where, params


# Alerts escalated to the DSL head the queue, whatever their severity (docs/dashboard.md).
_RANK = "CASE WHEN escalated_ms IS NULL THEN 0 ELSE 1 END"


def _cursor(alert: Alert, triage: Triage) -> str:
    rank = 0 if triage.escalated_ms is None else 1
    return f"{rank}.{alert.severity}.{alert.first_seen_ms}.{alert.id}"


def _parse_cursor(text: str) -> tuple[int, int, int, int]:
    try:
        rank, severity, first, alert_id = (int(part) for part in text.split("."))
    except ValueError as exc:
        raise QueueError(
            "cursor must be rank.severity.first_seen.id as the page links give it"
        ) from exc
    return rank, severity, first, alert_id


def read_queue(
    db: Database,
    principal: Principal,
    f: QueueFilter,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> QueuePage:
    """A page of alerts the principal may see: those escalated to the DSL first, then most
    severe first, then oldest first (the one waiting longest), then by id, so the order is
    total and a cursor never skips or repeats."""
    where, params = _where(principal, f)
    counts_clause = f" WHERE {' AND '.join(where)}" if where else ""
    counts = {
        int(sev): int(n)
        for sev, n in db.execute(
            f"SELECT severity, COUNT(*) FROM alerts{counts_clause} GROUP BY severity", params
        )
    }
    if f.severity is not None:
        where.append("severity = ?")
        params.append(f.severity)
    if cursor:
        rank, severity, first, alert_id = _parse_cursor(cursor)
        where.append(
            f"({_RANK} < ? OR ({_RANK} = ? AND (severity < ? OR (severity = ? AND "
            "(first_seen_ms > ? OR (first_seen_ms = ? AND id > ?))))))"
        )
        params.extend([rank, rank, severity, severity, first, first, alert_id])
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS}, {TRIAGE_COLUMNS} FROM alerts{clause} "
        f"ORDER BY {_RANK} DESC, severity DESC, first_seen_ms ASC, id ASC LIMIT {int(limit) + 1}",
        params,
    )
    alerts = [alert_of(r) for r in rows[:limit]]
    triage = {int(r[0]): triage_of(r) for r in rows[:limit]}
    more = len(rows) > limit
    last = _cursor(alerts[-1], triage[alerts[-1].id]) if more and alerts else None
    return QueuePage(alerts, last, counts, triage)


def new_since(db: Database, principal: Principal, since_id: int) -> tuple[int, int]:
    """How many open alerts the principal may see arrived after `since_id`, and the highest
    id among them (since_id when none): what the queue's "N new alerts" announces."""
    where, params = _where(principal, QueueFilter())
    where.append("id > ?")
    params.append(since_id)
    rows = db.execute(f"SELECT COUNT(*), MAX(id) FROM alerts WHERE {' AND '.join(where)}", params)
    count, highest = rows[0]
    return int(count), since_id if highest is None else int(highest)


def find_alert(db: Database, alert_id: int) -> Alert | None:
    """One alert by id, or None (hub.alerts.get_alert, for pages that answer 404)."""
    if not 0 < alert_id <= MAX_ID:
        return None
    try:
        return get_alert(db, alert_id)
    except AlertError:
        return None


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One report behind an alert, as the DfE standards ask: when, which address and user,
    and what was blocked in which category."""

    report_id: int
    time_ms: int
    kind: str
    client_ip: str | None
    client_user: str | None
    blocked: tuple[tuple[str, str, int], ...]  # (name, category, count)


def read_evidence(db: Database, alert: Alert, limit: int = 50) -> list[EvidenceItem]:
    """The reports an alert cites (those still kept), oldest first."""
    ids = list(alert.evidence[:limit])
    if not ids:
        return []
    marks = ", ".join("?" * len(ids))
    reports = db.execute(
        f"SELECT id, time_ms, kind, client_ip, client_user FROM reports WHERE id IN ({marks}) "
        "ORDER BY time_ms, id",
        ids,
    )
    blocked: dict[int, list[tuple[str, str, int]]] = {}
    for report_id, name, category, count in db.execute(
        f"SELECT report_id, name, category, count FROM blocked WHERE report_id IN ({marks}) "
        "ORDER BY report_id, name",
        ids,
    ):
        blocked.setdefault(int(report_id), []).append((name, category, int(count)))
    return [
        EvidenceItem(int(r[0]), int(r[1]), r[2], r[3], r[4], tuple(blocked.get(int(r[0]), [])))
        for r in reports
    ]


def severity_counts(db: Database) -> dict[str, dict[int, int]]:
    """Alerts by status and severity: the aggregates a governor may see (no individual)."""
    found: dict[str, dict[int, int]] = {}
    for status, severity, n in db.execute(
        "SELECT status, severity, COUNT(*) FROM alerts GROUP BY status, severity"
    ):
        found.setdefault(str(status), {})[int(severity)] = int(n)
    return found
