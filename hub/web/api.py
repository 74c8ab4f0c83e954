"""The JSON API under /api: the data the pages show, behind the same permission check."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from hub import alerts as alert_store
from hub.web.access_log import record_view
from hub.web.auth import Needs, web_context
from hub.web.pages import AlertMissing, queue_filter
from hub.web.permissions import Permission, Principal, require_item
from hub.web.queue import QueueFilter, find_alert, read_queue, severity_counts

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
        trail = alert_store.actions(db, alert.id)
    return {
        **alert.to_json(),
        "trail": [
            {"at_ms": at, "actor": actor, "action": action, "note": note}
            for at, actor, action, note in trail
        ],
    }


@router.get("/summary")
def summary(
    request: Request, principal: Annotated[Principal, Depends(Needs(Permission.AGGREGATES_VIEW))]
) -> dict[str, Any]:
    """Alerts by status and severity: totals only, never an individual."""
    with web_context(request).db() as db:
        counts = severity_counts(db)
    return {status: {str(k): v for k, v in sorted(c.items())} for status, c in counts.items()}
