"""Alert triage for the pages and the JSON API alike: who an alert may be assigned to, the one
function that applies an action (after the same permission check), and the device's timeline
around an alert."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hub import alert_triage
from hub import alerts as alert_store
from hub.model import Alert
from hub.notify.escalation import tell_dsl
from hub.notify.settings import NotifySettings
from hub.store import Database
from hub.web.accounts import list_accounts
from hub.web.permissions import Permission, Principal, allowed, require_item

TIMELINE_MARGIN_MS = 5 * 60_000  # "a few minutes either side of the alert"
TIMELINE_LIMIT = 200
# The actions a person may take, by the name in their URL (/alerts/{id}/<action>).
ACTIONS = ("acknowledge", "assign", "note", "escalate", "close", "reopen")


class TriageError(ValueError):
    """An action cannot be applied as asked (answered 409 by the API, shown on the page)."""


def may_see(principal: Principal, alert: Alert) -> bool:
    """Whether this person may see the alert (its group, for a limited role)."""
    if not allowed(principal, Permission.ALERTS_VIEW):
        return False
    return not principal.limited or (alert.group is not None and alert.group in principal.groups)


def assignees(db: Database, alert: Alert) -> list[str]:
    """The enabled dashboard users who may see and act on this alert, by name."""
    found = []
    for account in list_accounts(db):
        who = account.principal
        acts = allowed(who, Permission.ALERTS_ACT)
        if account.disabled_ms is None and acts and may_see(who, alert):
            found.append(account.username)
    return found


@dataclass(frozen=True, slots=True)
class ActionForm:
    """What a person sent with an action: a note or reason, and an assignee or outcome."""

    note: str = ""
    assignee: str = ""
    outcome: str = ""


def apply_action(
    db: Database,
    principal: Principal,
    alert: Alert,
    action: str,
    form: ActionForm,
    notify: NotifySettings | None = None,
    at_ms: int | None = None,
) -> Alert:
    """Check the principal may act on this alert, then apply the action in one transaction:
    an append-only trail row (escalating to the DSL also tells the DSL at once, through
    `notify`'s contacts). TriageError when the alert's state or the form does not allow it;
    Forbidden when the person may not. `at_ms`: when (default: now)."""
    require_item(principal, Permission.ALERTS_ACT, alert.group)
    if action not in ACTIONS:
        raise TriageError(f"no action {action!r}: one of {', '.join(ACTIONS)}")
    now = int(time.time() * 1000) if at_ms is None else at_ms
    who = principal.username
    note = form.note.strip()
    try:
        with db.transaction():
            if action == "acknowledge":
                return alert_store.acknowledge(db, alert.id, now, who, note or None)
            if action == "assign":
                if form.assignee not in assignees(db, alert):
                    raise TriageError(f"{form.assignee!r} may not see this alert")
                return alert_triage.assign(db, alert.id, now, who, form.assignee, note or None)
            if action == "note":
                return alert_triage.add_note(db, alert.id, now, who, note)
            if action == "escalate":
                escalated = alert_triage.escalate_to_dsl(db, alert.id, now, who, note)
                if notify is not None:
                    tell_dsl(db, notify, escalated, who, now)
                return escalated
            if action == "close":
                return alert_triage.close_with_outcome(db, alert.id, now, who, form.outcome, note)
            if action == "reopen":
                return alert_triage.reopen(db, alert.id, now, who, note)
    except alert_store.AlertError as exc:
        raise TriageError(str(exc)) from exc
    raise AssertionError(action)  # every name in ACTIONS returned above


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One thing the device did or met near the alert: when, what kind, and in words."""

    time_ms: int
    kind: str  # site, blocked, bypass, tamper, event
    text: str
    report_id: int


def _event_text(payload: dict[str, Any]) -> tuple[str, str]:
    event = str(payload.get("type", "event"))
    detail = payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    if event == "site_state":
        state = str(detail.get("state", "unknown")).replace("_", " ")
        before = detail.get("previous")
        was = f" (was {str(before).replace('_', ' ')})" if before else ""
        return "site", f"Site state: {state}{was}"
    if event == "bypass":
        what = next((detail[k] for k in ("method", "kind", "what") if detail.get(k)), "unknown")
        return "bypass", f"Bypass attempt: {what}"
    if event in ("tamper", "resolver_changed"):
        what = detail.get("what") or detail.get("reason") or event.replace("_", " ")
        return "tamper", f"Tamper: {what}"
    return "event", f"Event: {event.replace('_', ' ')}"


def read_timeline(db: Database, alert: Alert, client_ips: set[str]) -> list[TimelineEntry]:
    """The device's events and blocked names from a few minutes before the alert began to a
    few after it was last seen, oldest first. Behind a DNS filter (one device, many clients)
    only the alert's own clients' reports are read."""
    start, end = alert.first_seen_ms - TIMELINE_MARGIN_MS, alert.last_seen_ms + TIMELINE_MARGIN_MS
    where = "site = ? AND device = ? AND time_ms >= ? AND time_ms <= ?"
    params: list[object] = [alert.site, alert.device, start, end]
    if alert.device_class == "sinkhole" and client_ips:
        ips = sorted(client_ips)
        where += f" AND client_ip IN ({', '.join('?' * len(ips))})"
        params.extend(ips)
    reports = db.execute(
        f"SELECT id, kind, time_ms, body FROM reports WHERE {where} "
        f"ORDER BY time_ms, id LIMIT {TIMELINE_LIMIT}",
        params,
    )
    entries: list[TimelineEntry] = []
    ids = [int(r[0]) for r in reports]
    times = {int(r[0]): int(r[2]) for r in reports}
    for report_id, kind, time_ms, body in reports:
        if kind != "event":
            continue
        try:
            payload = json.loads(body)
        except ValueError:
            continue
        if not isinstance(payload, dict) or payload.get("type") == "blocked":
            continue  # its names are read from `blocked` below
        at = payload.get("at")
        what, text = _event_text(payload)
        when = at if type(at) is int and start <= at <= end else int(time_ms)
        entries.append(TimelineEntry(when, what, text, int(report_id)))
    if ids:
        marks = ", ".join("?" * len(ids))
        for report_id, name, category, count in db.execute(
            f"SELECT report_id, name, category, count FROM blocked WHERE report_id IN ({marks}) "
            "ORDER BY report_id, name",
            ids,
        ):
            text = f"Blocked {name} ({category}, {int(count)} time{'s' if int(count) != 1 else ''})"
            entries.append(TimelineEntry(times[int(report_id)], "blocked", text, int(report_id)))
    entries.sort(key=lambda e: (e.time_ms, e.report_id))
    return entries
