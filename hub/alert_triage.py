"""Alert triage in the store: the outcomes a person closes an alert with, who has it, whether
it was escalated to the DSL, and the actions a person takes (assign, note, escalate to the DSL,
close with an outcome, reopen), each an append-only trail row in the caller's transaction.
hub/alerts.py creates, folds and settles alerts; hub/web/triage.py checks who may act."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from hub.alerts import ALERT_COLUMNS, AlertError, add_action, alert_of, find_open, get_alert
from hub.model import Alert
from hub.store import Database, Row

log = logging.getLogger(__name__)


# The outcomes a person closes an alert with: the school's safeguarding policy's choices.
OUTCOMES = {
    "false_positive": "False positive",
    "no_further_action": "No further action",
    "managed_internally": "Managed internally",
    "early_help": "Early help",
    "social_care": "Children's social care",
    "police": "Police",
}
TRIAGE_COLUMNS = "assignee, outcome, escalated_ms"  # read after ALERT_COLUMNS by triage_of()


@dataclass(frozen=True, slots=True)
class Triage:
    """Where a person's handling of an alert stands: who has it, the outcome it was closed
    with, and when it was escalated to the DSL (None: not escalated)."""

    assignee: str | None = None
    outcome: str | None = None
    escalated_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TrailEntry:
    """One row of an alert's append-only trail; `value` is what it set (assignee, outcome)."""

    at_ms: int
    actor: str
    action: str
    note: str | None
    value: str | None


def triage_of(row: Row, start: int = 14) -> Triage:
    """A Triage from the TRIAGE_COLUMNS of a row, starting at column `start`."""
    escalated = row[start + 2]
    return Triage(row[start], row[start + 1], None if escalated is None else int(escalated))


def get_triage(db: Database, alert_id: int) -> Triage:
    """The triage state of one alert; AlertError if there is none."""
    rows = db.execute(f"SELECT {TRIAGE_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise AlertError(f"there is no alert {alert_id}")
    return triage_of(rows[0], 0)


def trail(db: Database, alert_id: int) -> list[TrailEntry]:
    """The alert's whole trail, oldest first."""
    rows = db.execute(
        "SELECT at_ms, actor, action, note, value FROM alert_actions WHERE alert_id = ? "
        "ORDER BY id",
        (alert_id,),
    )
    return [TrailEntry(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _required(text: str | None, what: str) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise AlertError(f"{what} is required")
    return cleaned


def _not_closed(alert: Alert) -> None:
    if alert.status == "closed":
        raise AlertError(f"alert {alert.id} is closed: reopen it first")


def assign(
    db: Database, alert_id: int, at_ms: int, actor: str, assignee: str, note: str | None = None
) -> Alert:
    """Give an open or acknowledged alert to a dashboard user (the caller checks that they may
    see it); the trail row carries the assignee."""
    alert = get_alert(db, alert_id)
    _not_closed(alert)
    assignee = _required(assignee, "the assignee")
    db.execute("UPDATE alerts SET assignee = ? WHERE id = ?", (assignee, alert_id))
    add_action(db, alert_id, at_ms, actor, "assigned", note, assignee)
    log.info("alert %d assigned to %s by %s", alert_id, assignee, actor)
    return alert


def add_note(db: Database, alert_id: int, at_ms: int, actor: str, note: str) -> Alert:
    """Add a note to an alert's trail, in any status."""
    alert = get_alert(db, alert_id)
    add_action(db, alert_id, at_ms, actor, "note", _required(note, "the note"))
    return alert


def escalate_to_dsl(db: Database, alert_id: int, at_ms: int, actor: str, reason: str) -> Alert:
    """Flag an open or acknowledged alert for the DSL: it heads the queue until closed."""
    alert = get_alert(db, alert_id)
    _not_closed(alert)
    reason = _required(reason, "the reason")
    if get_triage(db, alert_id).escalated_ms is not None:
        raise AlertError(f"alert {alert_id} is already escalated to the DSL")
    db.execute("UPDATE alerts SET escalated_ms = ? WHERE id = ?", (at_ms, alert_id))
    add_action(db, alert_id, at_ms, actor, "escalated to the DSL", reason)
    log.info("alert %d escalated to the DSL by %s", alert_id, actor)
    return alert


def close_with_outcome(
    db: Database, alert_id: int, at_ms: int, actor: str, outcome: str, reason: str
) -> Alert:
    """Close an open or acknowledged alert with one of OUTCOMES and the reason for it."""
    if outcome not in OUTCOMES:
        raise AlertError(f"outcome {outcome!r}: must be one of {', '.join(OUTCOMES)}")
    reason = _required(reason, "the reason")
    alert = get_alert(db, alert_id)
    _not_closed(alert)
    db.execute(
        "UPDATE alerts SET status = 'closed', outcome = ?, escalated_ms = NULL WHERE id = ?",
        (outcome, alert_id),
    )
    add_action(db, alert_id, at_ms, actor, "closed", reason, outcome)
    log.info("alert %d closed (%s) by %s", alert_id, outcome, actor)
    return replace(alert, status="closed")


def reopen(db: Database, alert_id: int, at_ms: int, actor: str, reason: str) -> Alert:
    """Reopen a closed alert, unless a newer alert of the same condition is open."""
    alert = get_alert(db, alert_id)
    if alert.status != "closed":
        raise AlertError(f"alert {alert_id} is not closed")
    reason = _required(reason, "the reason")
    other = find_open(db, alert.site, alert.device, alert.rule, alert.dedup_key)
    if other is not None:
        raise AlertError(f"alert {other.id} of the same condition is open: work on that one")
    db.execute("UPDATE alerts SET status = 'open', outcome = NULL WHERE id = ?", (alert_id,))
    add_action(db, alert_id, at_ms, actor, "reopened", reason)
    log.info("alert %d reopened by %s", alert_id, actor)
    return replace(alert, status="open")


def earlier_alerts(db: Database, alert: Alert, limit: int = 20) -> list[Alert]:
    """The device's alerts before this one, newest first."""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND device = ? AND id < ? "
        f"ORDER BY id DESC LIMIT {int(limit)}",
        (alert.site, alert.device, alert.id),
    )
    return [alert_of(r) for r in rows]


def newest_id(db: Database) -> int:
    """The highest alert id so far (0 when there are none): where "new since" starts."""
    rows = db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts")
    return int(rows[0][0])
