"""Concern records on the dashboard: the list, the form (from alerts or by hand), the record
with every entry, amending, signing off, the chronologies per pupil and per device, the export,
and the same under /api. Every read of a concern or chronology goes to the access log."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from hub import concerns as store
from hub.model import Alert
from hub.store import Database
from hub.web.access_log import record_view
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.permissions import ROLE_PERMISSIONS, Permission, Principal, require_item
from hub.web.queue import find_alert
from hub.web.sessions import csrf_token

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["concerns"])  # in the OpenAPI document; the pages are not
P = Permission
Opener = Annotated[Principal, Depends(Needs(P.CONCERNS_OPEN))]
Reader = Annotated[Principal, Depends(Needs(P.CONCERNS_VIEW))]


def _now() -> int:
    return int(time.time() * 1000)


def _render(
    request: Request, name: str, principal: Principal, code: int = 200, **values: object
) -> Response:
    values.update(
        principal=principal,
        can=ROLE_PERMISSIONS[principal.role],
        P=P,
        csrf=csrf_token(request.state.session_id),
        FIELDS=store.FIELDS,
        CATEGORIES=store.CATEGORIES,
    )
    return web_context(request).templates.TemplateResponse(request, name, values, status_code=code)


def _error(request: Request, principal: Principal, code: int, message: str) -> Response:
    return _render(request, "error.html", principal, code, status=code, message=message)


def _missing(request: Request, principal: Principal, what: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": f"there is no such {what}"}, status_code=404)
    return _error(request, principal, 404, f"There is no such {what}.")


def _groups(principal: Principal) -> frozenset[str] | None:
    """The groups whose concerns the principal sees (None: all)."""
    return principal.groups if principal.limited else None


# -- the checks pages and API share --


def _alerts(db: Database, principal: Principal, ids: list[int]) -> list[Alert]:
    """The alerts a concern is opened from: each must exist and be one the principal sees."""
    found: list[Alert] = []
    for alert_id in dict.fromkeys(ids):
        alert = find_alert(db, alert_id)
        if alert is None:
            raise store.ConcernError(f"there is no alert {alert_id}")
        require_item(principal, P.ALERTS_VIEW, alert.group)
        found.append(alert)
    return found


def _common_group(alerts: list[Alert]) -> str | None:
    groups = {a.group for a in alerts}
    return groups.pop() if len(groups) == 1 else None


def _open(
    db: Database, principal: Principal, group: str, values: dict[str, str], alert_ids: list[int]
) -> int:
    """Record a concern: a limited DSL only in one of their groups."""
    alerts = _alerts(db, principal, alert_ids)
    chosen = group.strip() or _common_group(alerts)
    if chosen is not None and len(chosen) > 64:
        raise store.ConcernError("Group: at most 64 characters")
    require_item(principal, P.CONCERNS_OPEN, chosen)
    with db.transaction():
        return store.open_concern(
            db,
            at_ms=_now(),
            actor=principal.username,
            role=str(principal.role),
            group=chosen,
            values=values,
            alerts=alerts,
        )


def _readable(db: Database, principal: Principal, concern_id: int, via: str) -> store.Concern:
    """The concern, if the principal may read it (its group), written to the access log."""
    concern = store.get_concern(db, concern_id)
    require_item(principal, P.CONCERNS_VIEW, concern.group)
    record_view(db, principal, "concern", str(concern_id), via)
    return concern


def _chronology(
    db: Database, principal: Principal, pupil: str, device: str, via: str
) -> tuple[str, list[store.ChronologyItem]]:
    """The chronology asked for (pupil or site/device) and its title; logged as viewed."""
    groups = _groups(principal)
    if pupil.strip() and not device:
        items = store.pupil_chronology(db, pupil, groups=groups)
        item = f"pupil:{pupil.strip()}"
        title = f"pupil {pupil.strip()}"
    elif device and not pupil.strip():
        site, _, name = device.partition("/")
        if not site or not name:
            raise store.ConcernError("device must be SITE/DEVICE, e.g. school/lt-042")
        items = store.device_chronology(db, site, name, groups=groups)
        item = f"device:{device}"
        title = f"device {device}"
    else:
        raise store.ConcernError("ask for one chronology: ?pupil=REF or ?device=SITE/DEVICE")
    record_view(db, principal, "chronology", item, via)
    return title, items


# -- pages --


@pages.get("/concerns")
def concern_list(
    request: Request,
    principal: Reader,
    status: Annotated[str, Query(max_length=20)] = "open",
    pupil: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Concerns newest first, filtered by status and pupil reference."""
    with web_context(request).db() as db:
        try:
            found = store.list_concerns(db, groups=_groups(principal), status=status, pupil=pupil)
        except store.ConcernError as exc:
            return _error(request, principal, 400, str(exc))
    return _render(
        request,
        "concerns.html",
        principal,
        concerns=found,
        status=status,
        pupil=pupil,
        statuses=store.STATUSES,
    )


def _alert_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()][:50]
    except ValueError:
        raise store.ConcernError("alerts must be alert numbers separated by commas") from None


def _form_page(
    request: Request,
    principal: Principal,
    db: Database,
    *,
    values: dict[str, str],
    group: str,
    alert_ids: list[int],
    error: str | None = None,
    recorded: int | None = None,
) -> Response:
    alerts = _alerts(db, principal, alert_ids)
    if not group and alerts:
        group = _common_group(alerts) or ""
    if not values.get("happened") and alerts:
        first = min(a.first_seen_ms for a in alerts)
        values = {**values, "happened": time.strftime("%Y-%m-%dT%H:%M", time.gmtime(first / 1000))}
    return _render(
        request,
        "concern_new.html",
        principal,
        400 if error else 200,
        values=values,
        group=group,
        alerts=alerts,
        error=error,
        recorded=recorded,
    )


@pages.get("/concerns/new")
def concern_form(
    request: Request,
    principal: Opener,
    alerts: Annotated[str, Query(max_length=600)] = "",
    alert: Annotated[list[int] | None, Query(max_length=50)] = None,
    recorded: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The concerns form, with the alerts of ?alerts=1,2 (or ?alert=1&alert=2, as the alert
    page's form sends them) ticked."""
    with web_context(request).db() as db:
        try:
            ids = (_alert_ids(alerts) + (alert or []))[:50]
            return _form_page(
                request, principal, db, values={}, group="", alert_ids=ids, recorded=recorded
            )
        except store.ConcernError as exc:
            return _error(request, principal, 400, str(exc))


class ConcernForm(BaseModel):
    """The concerns form as posted."""

    csrf: str = Field("", max_length=64)
    group: str = Field("", max_length=200)
    alert: list[int] = Field(default_factory=list, max_length=50)
    pupil: str = Field("", max_length=200)
    category: str = Field("", max_length=200)
    happened: str = Field("", max_length=40)
    device: str = Field("", max_length=400)
    seen: str = Field("", max_length=store.LONG)
    actions: str = Field("", max_length=store.LONG)
    decision: str = Field("", max_length=store.LONG)
    reasons: str = Field("", max_length=store.LONG)
    parents_informed: str = Field("", max_length=10)
    parents_informed_at: str = Field("", max_length=40)
    outcome: str = Field("", max_length=store.LONG)
    reason: str = Field("", max_length=store.LONG)  # an amendment's

    def values(self) -> dict[str, str]:
        """The concern's fields."""
        return {f: str(getattr(self, f)) for f in store.FIELDS}


@pages.post("/concerns")
def concern_record(
    request: Request, principal: Opener, form: Annotated[ConcernForm, Form()]
) -> Response:
    """Record the concern; a reader is sent to it, anyone else told it went to the DSL."""
    check_csrf(request, form.csrf)
    with web_context(request).db() as db:
        try:
            concern_id = _open(db, principal, form.group, form.values(), form.alert)
        except store.ConcernError as exc:
            try:
                return _form_page(
                    request,
                    principal,
                    db,
                    values=form.values(),
                    group=form.group,
                    alert_ids=form.alert,
                    error=str(exc),
                )
            except store.ConcernError:  # the form cannot be drawn again (an unknown alert)
                return _error(request, principal, 400, str(exc))
    if P.CONCERNS_VIEW in ROLE_PERMISSIONS[principal.role]:
        return RedirectResponse(f"/concerns/{concern_id}", status_code=303)
    return RedirectResponse(f"/concerns/new?recorded={concern_id}", status_code=303)


@pages.get("/concerns/{concern_id}")
def concern_page(request: Request, concern_id: int, principal: Reader) -> Response:
    """The record: every entry in order, each field's current value, the linked alerts."""
    with web_context(request).db() as db:
        try:
            concern = _readable(db, principal, concern_id, "page")
        except store.ConcernMissing:
            return _missing(request, principal, "concern")
    return _render(request, "concern.html", principal, concern=concern, error=None)


@pages.get("/concerns/{concern_id}/amend")
def amend_form(request: Request, concern_id: int, principal: Reader) -> Response:
    """The amendment form: the current values, a reason to give."""
    with web_context(request).db() as db:
        try:
            concern = _readable(db, principal, concern_id, "page")
        except store.ConcernMissing:
            return _missing(request, principal, "concern")
    return _render(
        request,
        "concern_amend.html",
        principal,
        concern=concern,
        values=concern.current,
        reason="",
        error=None,
    )


@pages.post("/concerns/{concern_id}/amend")
def amend_record(
    request: Request, concern_id: int, principal: Reader, form: Annotated[ConcernForm, Form()]
) -> Response:
    """Add the amendment as a new entry (only the fields that change), with its reason."""
    check_csrf(request, form.csrf)
    with web_context(request).db() as db:
        try:
            concern = _readable(db, principal, concern_id, "page")
            with db.transaction():
                store.amend(
                    db,
                    concern_id,
                    at_ms=_now(),
                    actor=principal.username,
                    role=str(principal.role),
                    values=form.values(),
                    reason=form.reason,
                )
        except store.ConcernMissing:
            return _missing(request, principal, "concern")
        except store.ConcernError as exc:
            return _render(
                request,
                "concern_amend.html",
                principal,
                400,
                concern=concern,
                values=form.values(),
                reason=form.reason,
                error=str(exc),
            )
    return RedirectResponse(f"/concerns/{concern_id}", status_code=303)


@pages.post("/concerns/{concern_id}/sign-off")
def sign_off_record(
    request: Request,
    concern_id: int,
    principal: Reader,
    csrf: Annotated[str, Form(max_length=64)] = "",
    note: Annotated[str, Form(max_length=store.LONG)] = "",
) -> Response:
    """Sign the concern off as it stands: an entry with who, when and an optional note."""
    check_csrf(request, csrf)
    with web_context(request).db() as db:
        try:
            concern = _readable(db, principal, concern_id, "page")
            with db.transaction():
                store.sign_off(
                    db,
                    concern_id,
                    at_ms=_now(),
                    actor=principal.username,
                    role=str(principal.role),
                    note=note,
                )
        except store.ConcernMissing:
            return _missing(request, principal, "concern")
        except store.ConcernError as exc:
            return _render(request, "concern.html", principal, 409, concern=concern, error=str(exc))
    return RedirectResponse(f"/concerns/{concern_id}", status_code=303)


@pages.get("/concerns/{concern_id}/export")
def export(
    request: Request,
    concern_id: int,
    principal: Reader,
    format: Annotated[str, Query(pattern="^(html|text)$")] = "html",
) -> Response:
    """The concern as a document to attach to CPOMS or MyConcern: one printable HTML file
    (styles inside it) or plain text, downloaded."""
    with web_context(request).db() as db:
        try:
            concern = _readable(db, principal, concern_id, "export")
        except store.ConcernMissing:
            return _missing(request, principal, "concern")
    values = {
        "concern": concern,
        "FIELDS": store.FIELDS,
        "exported_by": principal.username,
        "exported_ms": _now(),
    }
    templates = web_context(request).templates
    name = f"concern-{concern.id}"
    if format == "text":
        body = templates.get_template("concern_export.txt").render(values)
        return PlainTextResponse(
            body, headers={"Content-Disposition": f'attachment; filename="{name}.txt"'}
        )
    body = templates.get_template("concern_export.html").render(values)
    return Response(
        body,
        media_type="text/html; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.html"'},
    )


@pages.get("/chronology")
def chronology_page(
    request: Request,
    principal: Reader,
    pupil: Annotated[str, Query(max_length=64)] = "",
    device: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """Concerns and alerts of one pupil or one device, in time order."""
    with web_context(request).db() as db:
        try:
            title, items = _chronology(db, principal, pupil, device, "page")
        except store.ConcernError as exc:
            return _error(request, principal, 400, str(exc))
    return _render(
        request,
        "chronology.html",
        principal,
        title=title,
        items=items,
        quote=lambda s: quote(s, safe="/"),
    )


# -- the JSON API --


class ConcernBody(BaseModel):
    """A concern to record: its fields, its group, the alerts it comes from."""

    fields: dict[str, Annotated[str, Field(max_length=store.LONG)]] = Field(max_length=20)
    group: str = Field("", max_length=64)
    alerts: list[int] = Field(default_factory=list, max_length=50)


class AmendBody(BaseModel):
    """An amendment: the fields that change and why."""

    fields: dict[str, Annotated[str, Field(max_length=store.LONG)]] = Field(max_length=20)
    reason: str = Field(max_length=store.LONG)


class SignOffBody(BaseModel):
    """A sign-off and its optional note."""

    note: str = Field("", max_length=store.LONG)


def _bad(exc: store.ConcernError) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=404 if isinstance(exc, store.ConcernMissing) else 400
    )


@api.get("/concerns", response_model=None)
def api_list(
    request: Request,
    principal: Reader,
    status: Annotated[str, Query(max_length=20)] = "open",
    pupil: Annotated[str, Query(max_length=64)] = "",
) -> dict[str, Any] | JSONResponse:
    """Concerns newest first (at most 500), filtered as the page is."""
    with web_context(request).db() as db:
        try:
            found = store.list_concerns(db, groups=_groups(principal), status=status, pupil=pupil)
        except store.ConcernError as exc:
            return _bad(exc)
    return {"concerns": [c.to_json() for c in found]}


@api.post("/concerns", status_code=201, response_model=None)
def api_open(
    request: Request, principal: Opener, body: ConcernBody
) -> dict[str, Any] | JSONResponse:
    """Record a concern; answers its id only (a co-ordinator cannot read it back)."""
    with web_context(request).db() as db:
        try:
            concern_id = _open(db, principal, body.group, dict(body.fields), body.alerts)
        except store.ConcernError as exc:
            return _bad(exc)
    return {"id": concern_id}


@api.get("/concerns/{concern_id}", response_model=None)
def api_get(request: Request, concern_id: int, principal: Reader) -> dict[str, Any] | JSONResponse:
    """One concern: every entry, the current values, the linked alerts; logged as viewed."""
    with web_context(request).db() as db:
        try:
            return _readable(db, principal, concern_id, "api").to_json()
        except store.ConcernError as exc:
            return _bad(exc)


@api.post("/concerns/{concern_id}/amend", status_code=201, response_model=None)
def api_amend(
    request: Request, concern_id: int, principal: Reader, body: AmendBody
) -> dict[str, Any] | JSONResponse:
    """Add an amendment; answers the new entry's id."""
    with web_context(request).db() as db:
        try:
            _readable(db, principal, concern_id, "api")
            with db.transaction():
                entry_id = store.amend(
                    db,
                    concern_id,
                    at_ms=_now(),
                    actor=principal.username,
                    role=str(principal.role),
                    values=dict(body.fields),
                    reason=body.reason,
                )
        except store.ConcernError as exc:
            return _bad(exc)
    return {"entry": entry_id}


@api.post("/concerns/{concern_id}/sign-off", status_code=201, response_model=None)
def api_sign_off(
    request: Request, concern_id: int, principal: Reader, body: SignOffBody
) -> dict[str, Any] | JSONResponse:
    """Sign the concern off; answers the new entry's id (409 if it already is)."""
    with web_context(request).db() as db:
        try:
            _readable(db, principal, concern_id, "api")
            with db.transaction():
                entry_id = store.sign_off(
                    db,
                    concern_id,
                    at_ms=_now(),
                    actor=principal.username,
                    role=str(principal.role),
                    note=body.note,
                )
        except store.ConcernMissing as exc:
            return _bad(exc)
        except store.ConcernError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=409)
    return {"entry": entry_id}


@api.get("/chronology", response_model=None)
def api_chronology(
    request: Request,
    principal: Reader,
    pupil: Annotated[str, Query(max_length=64)] = "",
    device: Annotated[str, Query(max_length=200)] = "",
) -> dict[str, Any] | JSONResponse:
    """One pupil's or one device's concerns and alerts in time order; logged as viewed."""
    with web_context(request).db() as db:
        try:
            title, items = _chronology(db, principal, pupil, device, "api")
        except store.ConcernError as exc:
            return _bad(exc)
    return {
        "chronology": title,
        "items": [
            {
                "at_ms": i.at_ms,
                "kind": i.kind,
                "concern": i.concern.id if i.concern else None,
                "entry": i.entry.id if i.entry else None,
                "alert": i.alert.alert_id if i.alert else None,
                "summary": i.alert.summary if i.alert else None,
            }
            for i in items
        ],
    }


# One router for the app to include. Not include_in_schema=False on it: that would hide the
# API from the OpenAPI document too.
router = APIRouter()
router.include_router(pages)
router.include_router(api)
