"""The checks register's page, form and JSON API: /checks and /api/checks."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from hub.checks import KINDS, RESULTS, CheckError, add_check, read_checks, selftest_check
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.pages import _render
from hub.web.permissions import Permission, Principal

router = APIRouter()
_VIEW = Annotated[Principal, Depends(Needs(Permission.CHECKS_VIEW))]
_RECORD = Annotated[Principal, Depends(Needs(Permission.CHECKS_RECORD))]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _day_ms(text: str) -> int:
    try:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise CheckError("the date must be YYYY-MM-DD") from None
    return int(day.timestamp() * 1000)


def _page(request: Request, principal: Principal, error: str | None = None) -> Response:
    with web_context(request).db() as db:
        checks = read_checks(db)
    response = _render(
        request,
        "checks.html",
        principal,
        checks=checks,
        kinds=KINDS,
        results=RESULTS,
        error=error,
        today=datetime.now(UTC).strftime("%Y-%m-%d"),
    )
    if error is not None:
        response.status_code = 400
    return response


@router.get("/checks", include_in_schema=False)
def checks_page(request: Request, principal: _VIEW) -> Response:
    """The register, newest first, and (for those who may) the form to add a manual check."""
    return _page(request, principal)


@router.post("/checks", include_in_schema=False)
def record_check(
    request: Request,
    principal: _RECORD,
    csrf: Annotated[str, Form(max_length=64)] = "",
    day: Annotated[str, Form(max_length=10)] = "",
    what: Annotated[str, Form(max_length=2000)] = "",
    result: Annotated[str, Form(max_length=16)] = "",
    action: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Append a manual check; back to the register, or the page again with why not."""
    check_csrf(request, csrf)
    try:
        with web_context(request).db() as db:
            add_check(
                db,
                at_ms=_day_ms(day),
                recorded_ms=_now_ms(),
                recorded_by=principal.username,
                kind="manual",
                what=what,
                result=result,
                action=action,
            )
    except CheckError as exc:
        return _page(request, principal, str(exc))
    return RedirectResponse("/checks", status_code=303)


@router.get("/api/checks", tags=["dashboard"])
def list_checks(request: Request, principal: _VIEW) -> dict[str, Any]:
    """The register, newest first."""
    with web_context(request).db() as db:
        return {"checks": [c.to_json() for c in read_checks(db)]}


@router.post("/api/checks", tags=["dashboard"], response_model=None)
def add_manual(
    request: Request, principal: _RECORD, body: Annotated[dict[str, Any], Body()]
) -> Any:
    """Append a manual check: {"day": "YYYY-MM-DD", "what", "result", "action"}."""
    try:
        with web_context(request).db() as db:
            new_id = add_check(
                db,
                at_ms=_day_ms(str(body.get("day", ""))),
                recorded_ms=_now_ms(),
                recorded_by=principal.username,
                kind="manual",
                what=str(body.get("what", "")),
                result=str(body.get("result", "")),
                action=str(body.get("action", "")),
            )
    except CheckError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return {"id": new_id}


@router.post("/api/checks/selftest", tags=["dashboard"], response_model=None)
def add_selftest(
    request: Request, principal: _RECORD, body: Annotated[dict[str, Any], Body()]
) -> Any:
    """Append a `hedgerow-dns selftest --json` run (its whole output as the body, optionally
    with "action"): the result is derived from its summary."""
    summary = body.get("summary")
    try:
        if not isinstance(summary, dict):
            raise CheckError("not a selftest output: no summary object")
        what, result, passed, failed = selftest_check(summary)
        now = _now_ms()
        with web_context(request).db() as db:
            new_id = add_check(
                db,
                at_ms=now,
                recorded_ms=now,
                recorded_by=principal.username,
                kind="selftest",
                what=what,
                result=result,
                action=str(body.get("action", "")),
                passed=passed,
                failed=failed,
            )
    except CheckError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return {"id": new_id, "result": result}
