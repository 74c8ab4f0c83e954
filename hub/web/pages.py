"""The dashboard's HTML pages: home per role, the alert queue and detail, the access log."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from hub import alert_triage
from hub.web.access_log import read_log, record_view
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.context import notify_of
from hub.web.permissions import ROLE_PERMISSIONS, Permission, Principal, require_item
from hub.web.queue import QueueFilter, find_alert, read_evidence, read_queue, severity_counts
from hub.web.sessions import csrf_token
from hub.web.triage import (
    ACTIONS,
    ActionForm,
    TriageError,
    apply_action,
    assignees,
    may_see,
    read_timeline,
)

router = APIRouter(include_in_schema=False)


class AlertMissing(Exception):
    """No such alert: answered 404."""


def _render(request: Request, name: str, principal: Principal, **values: object) -> Response:
    ctx = web_context(request)
    values.update(
        principal=principal,
        can=ROLE_PERMISSIONS[principal.role],
        P=Permission,
        csrf=csrf_token(request.state.session_id),
    )
    return ctx.templates.TemplateResponse(request, name, values)


@router.get("/")
def home(
    request: Request, principal: Annotated[Principal, Depends(Needs(Permission.HOME))]
) -> Response:
    """The home page: what this role may open, and the totals it may see."""
    counts = None
    if Permission.AGGREGATES_VIEW in ROLE_PERMISSIONS[principal.role]:
        with web_context(request).db() as db:
            counts = severity_counts(db)
    return _render(request, "home.html", principal, counts=counts)


def queue_filter(
    status: str = "open",
    site: str | None = None,
    group: str | None = None,
    rule: str | None = None,
    severity: Annotated[int | None, Query(ge=1, le=5)] = None,
    assignee: str | None = None,
) -> QueueFilter:
    """The queue's filters from the URL (shared by the page and the API)."""
    return QueueFilter(
        status=status,
        site=site,
        group=group,
        rule=rule,
        severity=severity,
        assignee=assignee or None,
    )


@router.get("/alerts")
def alert_queue(
    request: Request,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_VIEW))],
    f: Annotated[QueueFilter, Depends(queue_filter)],
    cursor: str | None = None,
) -> Response:
    """Open alerts by severity then age, counts by severity at the top, filters in the URL."""
    with web_context(request).db() as db:
        # Read before the page, so an alert that lands in between is announced, not missed.
        newest = alert_triage.newest_id(db)
        page = read_queue(db, principal, f, cursor)
    query = f.query()
    next_link = None
    if page.next_cursor:
        next_link = "/alerts?" + urlencode({**query, "cursor": page.next_cursor})
    return _render(
        request,
        "alerts.html",
        principal,
        page=page,
        filter=f,
        next_link=next_link,
        first_link="/alerts?" + urlencode(query),
        paged=cursor is not None,
        newest=newest,
        severity_link=lambda s: "/alerts?" + urlencode({**query, "severity": str(s)}),
    )


def _detail(
    request: Request, principal: Principal, alert_id: int, error: str | None = None
) -> Response:
    with web_context(request).db() as db:
        alert = find_alert(db, alert_id)
        if alert is None:
            raise AlertMissing()
        require_item(principal, Permission.ALERTS_VIEW, alert.group)
        record_view(db, principal, "alert", str(alert.id), "page")
        evidence = read_evidence(db, alert)
        ips = {e.client_ip for e in evidence if e.client_ip}
        response = _render(
            request,
            "alert.html",
            principal,
            alert=alert,
            triage=alert_triage.get_triage(db, alert.id),
            evidence=evidence,
            timeline=read_timeline(db, alert, ips),
            # A limited DSL sees the device's earlier alerts of their own groups only.
            earlier=[e for e in alert_triage.earlier_alerts(db, alert) if may_see(principal, e)],
            trail=alert_triage.trail(db, alert.id),
            assignees=assignees(db, alert),
            outcomes=alert_triage.OUTCOMES,
            error=error,
        )
    if error is not None:
        response.status_code = 409
    return response


@router.get("/alerts/{alert_id}")
def alert_detail(
    request: Request,
    alert_id: int,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_VIEW))],
) -> Response:
    """One alert: its sentence, evidence, the device's timeline, earlier alerts, the actions
    and the trail; the view goes to the access log."""
    return _detail(request, principal, alert_id)


@router.post("/alerts/{alert_id}/{action}")
def act(
    request: Request,
    alert_id: int,
    action: str,
    principal: Annotated[Principal, Depends(Needs(Permission.ALERTS_ACT))],
    csrf: Annotated[str, Form(max_length=64)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    assignee: Annotated[str, Form(max_length=64)] = "",
    outcome: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Acknowledge, assign, note, escalate, close or reopen (ACTIONS): an append-only row in
    the trail with who and the note; back to the alert, or the page again with why not."""
    check_csrf(request, csrf)
    if action not in ACTIONS:
        raise AlertMissing()
    with web_context(request).db() as db:
        alert = find_alert(db, alert_id)
        if alert is None:
            raise AlertMissing()
        try:
            form = ActionForm(note, assignee, outcome)
            apply_action(db, principal, alert, action, form, notify_of(request))
        except TriageError as exc:
            error = str(exc)
        else:
            return RedirectResponse(f"/alerts/{alert_id}#trail", status_code=303)
    return _detail(request, principal, alert_id, error)


@router.get("/access-log")
def access_log(
    request: Request,
    principal: Annotated[Principal, Depends(Needs(Permission.ACCESS_LOG_VIEW))],
    before: Annotated[int | None, Query(ge=1)] = None,
    username: str | None = None,
) -> Response:
    """Who viewed which individual's record, newest first."""
    with web_context(request).db() as db:
        entries = read_log(db, before_id=before, username=username or None)
    older = None
    if len(entries) == 100:
        older = "/access-log?" + urlencode(
            {k: v for k, v in {"before": str(entries[-1].id), "username": username}.items() if v}
        )
    return _render(request, "access_log.html", principal, entries=entries, older=older)
