"""The JSON API under /api: the data the pages show, behind the same permission check."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from hub import alert_triage
from hub.model import Alert
from hub.store import Database
from hub.web.access_log import record_view
from hub.web.auth import Needs, web_context
from hub.web.context import notify_of
from hub.web.pages import AlertMissing, queue_filter
from hub.web.permissions import Permission, Principal, require_item
from hub.web.queue import (
    MAX_ID,
    QueueFilter,
    find_alert,
    new_since,
    read_queue,
    severity_counts,
)
from hub.web.triage import ActionForm, TriageError, apply_action

router = APIRouter(prefix="/api", tags=["dashboard"])


@router.get("/me")
def me(principal: Annotated[Principal, Depends(Needs(Permission.HOME))]) -> dict[str, Any]:
    """The logged-in account: name, role and groups."""
    return {
        "username": principal.username,
        "role": str(principal.role),
        "groups": sorted(principal.groups),
    }


@router.get("/alerts")
def list_alerts(
    request: Request,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_VIEW))],
    f: Annotated[QueueFilter, Depends(queue_filter)],
    cursor: str | None = None,
) -> dict[str, Any]:
    """The alert queue: alerts (as `hedgerow-hub alerts --json`), counts by severity and the
    cursor of the next page (null on the last)."""
    with web_context(request).db() as db:
        page = read_queue(db, principal, f, cursor)
    return {
        "alerts": [a.to_json() for a in page.alerts],
        "counts": {str(k): v for k, v in sorted(page.counts.items())},
        "next_cursor": page.next_cursor,
    }


@router.get("/alerts/new")
def new_alerts(
    request: Request,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_VIEW))],
    since_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """How many open alerts this person may see arrived after alert `since_id`, and the
    newest one's id (`since_id` when none): what the queue page polls to announce them."""
    with web_context(request).db() as db:
        count, newest = new_since(db, principal, since_id)
    return {"count": count, "newest_id": newest}


def _alert_json(db: Database, alert: Alert) -> dict[str, Any]:
    triage = alert_triage.get_triage(db, alert.id)
    return {
        **alert.to_json(),
        "assignee": triage.assignee,
        "outcome": triage.outcome,
        "escalated_to_dsl": triage.escalated_ms is not None,
        "trail": [
            {
                "at_ms": t.at_ms,
                "actor": t.actor,
                "action": t.action,
                "note": t.note,
                "value": t.value,
            }
            for t in alert_triage.trail(db, alert.id)
        ],
    }


@router.get("/alerts/{alert_id}")
def get_alert(
    request: Request,
    alert_id: int,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_VIEW))],
) -> dict[str, Any]:
    """One alert and its trail; the view goes to the access log."""
    with web_context(request).db() as db:
        alert = find_alert(db, alert_id)
        if alert is None:
            raise AlertMissing()
        require_item(principal, Permission.ALERTS_VIEW, alert.group)
        record_view(db, principal, "alert", str(alert.id), "api")
        return _alert_json(db, alert)


class ActionBody(BaseModel):
    """An action's JSON body: the note or reason (required to note, escalate, close and
    reopen), the assignee (assign) and the outcome (close)."""

    note: str = Field(default="", max_length=2000)
    assignee: str = Field(default="", max_length=64)
    outcome: str = Field(default="", max_length=64)


def _act(
    request: Request, principal: Principal, alert_id: int, action: str, body: ActionBody
) -> Any:
    with web_context(request).db() as db:
        alert = find_alert(db, alert_id)
        if alert is None:
            raise AlertMissing()
        try:
            form = ActionForm(body.note, body.assignee, body.outcome)
            apply_action(db, principal, alert, action, form, notify_of(request))
        except TriageError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
        record_view(db, principal, "alert", str(alert.id), "api")  # the answer shows the alert
        return _alert_json(db, find_alert(db, alert_id) or alert)


_ACTS = Annotated[Principal, Depends(Needs(Permission.ALERTS_ACT))]


@router.post("/alerts/{alert_id}/acknowledge", response_model=None)
def acknowledge(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Acknowledge an open alert (note optional). 409 if it is not open."""
    return _act(request, principal, alert_id, "acknowledge", body)


@router.post("/alerts/{alert_id}/assign", response_model=None)
def assign(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Assign to `assignee`, a dashboard user who may see and act on the alert."""
    return _act(request, principal, alert_id, "assign", body)


@router.post("/alerts/{alert_id}/note", response_model=None)
def note(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Add `note` to the trail."""
    return _act(request, principal, alert_id, "note", body)


@router.post("/alerts/{alert_id}/escalate", response_model=None)
def escalate(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Escalate to the DSL with the reason in `note`: the alert heads the queue."""
    return _act(request, principal, alert_id, "escalate", body)


@router.post("/alerts/{alert_id}/close", response_model=None)
def close(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Close with an `outcome` (hub.alert_triage.OUTCOMES) and the reason in `note`."""
    return _act(request, principal, alert_id, "close", body)


@router.post("/alerts/{alert_id}/reopen", response_model=None)
def reopen(request: Request, alert_id: int, principal: _ACTS, body: ActionBody) -> Any:
    """Reopen a closed alert, with the reason in `note`."""
    return _act(request, principal, alert_id, "reopen", body)


@router.get("/summary")
def summary(
    request: Request, principal: Annotated[Principal, Depends(Needs(Permission.AGGREGATES_VIEW))]
) -> dict[str, Any]:
    """Alerts by status and severity: totals only, never an individual."""
    with web_context(request).db() as db:
        counts = severity_counts(db)
    return {status: {str(k): v for k, v in sorted(c.items())} for status, c in counts.items()}
