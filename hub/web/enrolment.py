"""Enrolment tokens on the dashboard, pages and JSON API: making a token (shown once, stored
hashed), listing tokens with their state, revoking one. The code paths of
`hedgerow-hub enroll-token create|list|revoke`, broker files included. Each token made or
revoked is written to the access log ("enrolment token created", "enrolment token revoked")."""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from common.errors import HedgerowError
from common.identity import DEVICE_CLASSES
from hub.enroll.broker import BrokerFiles, write_broker_files
from hub.enroll.settings import enrol_command
from hub.enroll.tokens import TokenRow, create_token, list_tokens, parse_duration, revoke_token
from hub.keys import HubKeys
from hub.policy.publish import known_sites
from hub.policy.settings import load_policy_settings
from hub.web.access_log import record_view
from hub.web.auth import Needs, check_csrf, web_context
from hub.web.context import hub_config
from hub.web.pages import _render
from hub.web.permissions import Permission, Principal
from hub.web.queue import QueueError

log = logging.getLogger(__name__)
router = APIRouter()
_MANAGE = Annotated[Principal, Depends(Needs(Permission.DEVICES_MANAGE))]
TOKEN_CREATED = "enrolment token created"
TOKEN_REVOKED = "enrolment token revoked"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: its text is shown this once and never stored."""

    text: str
    token_id: str
    site: str
    device_class: str
    group: str | None
    uses: int
    expires_ms: int
    command: str
    broker_note: str | None  # the broker did not reload


class TokenError(QueueError):
    """A token that cannot be made or revoked, with the reason for people."""


def _broker_note(files: BrokerFiles) -> str | None:
    if files.reload is not None and not files.reload.ok:
        return (
            "The broker did not reload its accounts: the device cannot log in to enrol until "
            "Mosquitto reloads (a security alert is raised)."
        )
    return None


def _make_token(
    request: Request,
    principal: Principal,
    *,
    site: str,
    device_class: str,
    group: str | None,
    uses: int,
    expires: str,
    via: str,
) -> NewToken:
    """`hedgerow-hub enroll-token create`'s code path: the token, its hash and its broker
    login's stored in one transaction with the rewritten broker files."""
    config = hub_config(request)
    site = site or config.site
    now = _now_ms()
    try:
        lifetime = parse_duration(expires)
        groups = [g.name for g in load_policy_settings(config, site).groups]
        keys = HubKeys(config.keys_dir)
        with web_context(request).db() as db, db.transaction():
            token = create_token(
                db,
                keys,
                site=site,
                device_class=device_class,
                group=group,
                uses=uses,
                expires_ms=now + lifetime,
                now_ms=now,
                groups=groups,
            )
            files = write_broker_files(db, config, now_ms=now)
            record_view(db, principal, TOKEN_CREATED, token.token_id, via)
    except HedgerowError as exc:
        raise TokenError(str(exc)) from None
    log.info("%s created enrolment token %s", principal.username, token.token_id)
    return NewToken(
        text=token.text,
        token_id=token.token_id,
        site=site,
        device_class=device_class,
        group=group,
        uses=uses,
        expires_ms=now + lifetime,
        command=enrol_command(config, site, device_class, token.text),
        broker_note=_broker_note(files),
    )


def _revoke_token(request: Request, principal: Principal, token_id: str, via: str) -> TokenRow:
    """`hedgerow-hub enroll-token revoke`'s code path: the token, then its broker login."""
    config = hub_config(request)
    now = _now_ms()
    try:
        with web_context(request).db() as db, db.transaction():
            row = revoke_token(db, token_id, now_ms=now)
            write_broker_files(db, config, now_ms=now)
            record_view(db, principal, TOKEN_REVOKED, row.token_id or token_id, via)
    except HedgerowError as exc:
        raise TokenError(str(exc)) from None
    log.info("%s revoked enrolment token %s", principal.username, row.token_id)
    return row


def _token_json(row: TokenRow, now_ms: int) -> dict[str, Any]:
    return {
        "token_id": row.token_id,
        "site": row.site,
        "class": row.device_class,
        "group": row.group,
        "uses_left": row.uses_left,
        "created_ms": row.created_ms,
        "expires_ms": row.expires_ms,
        "revoked_ms": row.revoked_ms,
        "state": row.state(now_ms),
    }


def _tokens_page(
    request: Request,
    principal: Principal,
    *,
    created: NewToken | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    config = hub_config(request)
    with web_context(request).db() as db:
        tokens = list_tokens(db)
        all_sites = known_sites(db, config)
    try:
        groups = [g.name for g in load_policy_settings(config, config.site).groups]
    except HedgerowError:
        groups = []
    response = _render(
        request,
        "tokens.html",
        principal,
        tokens=tokens,
        now=_now_ms(),
        sites=all_sites,
        default_site=config.site,
        classes=DEVICE_CLASSES,
        groups=groups,
        created=created,
        error=error,
        form_id=secrets.token_urlsafe(16),
    )
    response.status_code = status
    return response


_SPENT_FORMS = 4096  # form ids remembered, per hub process


def _first_sending(request: Request, form_id: str) -> bool:
    """False if this token form was sent before (a reload of the answer re-sends it): the
    token it made was shown once, and a reload must not make a second one."""
    if not form_id:
        return True
    spent = getattr(request.app.state, "spent_token_forms", None)
    if not isinstance(spent, OrderedDict):
        spent = OrderedDict()
        request.app.state.spent_token_forms = spent
    if form_id in spent:
        return False
    spent[form_id] = None
    while len(spent) > _SPENT_FORMS:
        spent.popitem(last=False)
    return True


@router.get("/devices/tokens", include_in_schema=False)
def tokens_page(request: Request, principal: _MANAGE) -> Response:
    """Enrolment tokens with their state, and the form to make one."""
    return _tokens_page(request, principal)


@router.post("/devices/tokens", include_in_schema=False)
def create_token_page(
    request: Request,
    principal: _MANAGE,
    csrf: Annotated[str, Form(max_length=64)] = "",
    site: Annotated[str, Form(max_length=63)] = "",
    device_class: Annotated[str, Form(max_length=32)] = "",
    group: Annotated[str, Form(max_length=63)] = "",
    uses: Annotated[int, Form(ge=1, le=10_000)] = 1,
    expires: Annotated[str, Form(max_length=16)] = "7d",
    form_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Make a token and show it, this once (it is never stored, and never shown again)."""
    check_csrf(request, csrf)
    if not _first_sending(request, form_id):
        return _tokens_page(
            request,
            principal,
            error="this form was already sent (the page was reloaded): its token was shown "
            "once, on the page that answered it, and no second one was made. Make a new one "
            "below if you need it",
            status=409,
        )
    try:
        created = _make_token(
            request,
            principal,
            site=site,
            device_class=device_class,
            group=group or None,
            uses=uses,
            expires=expires,
            via="page",
        )
    except TokenError as exc:
        return _tokens_page(request, principal, error=str(exc), status=400)
    return _tokens_page(request, principal, created=created)


@router.post("/devices/tokens/revoke", include_in_schema=False)
def revoke_token_page(
    request: Request,
    principal: _MANAGE,
    csrf: Annotated[str, Form(max_length=64)] = "",
    token_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Revoke a token: it enrols nothing more, and its broker login goes."""
    check_csrf(request, csrf)
    try:
        _revoke_token(request, principal, token_id, "page")
    except TokenError as exc:
        return _tokens_page(request, principal, error=str(exc), status=400)
    return RedirectResponse("/devices/tokens", status_code=303)


# --- JSON API ---


@router.get("/api/devices/tokens", tags=["dashboard"])
def list_tokens_json(request: Request, principal: _MANAGE) -> dict[str, Any]:
    """Every enrolment token's state (never the token itself), newest first."""
    now = _now_ms()
    with web_context(request).db() as db:
        return {"tokens": [_token_json(t, now) for t in list_tokens(db)]}


@router.post("/api/devices/tokens", tags=["dashboard"], response_model=None)
def create_token_json(
    request: Request, principal: _MANAGE, body: Annotated[dict[str, Any], Body()]
) -> Any:
    """Make a token: {"class", "group", "site", "uses", "expires"}; its text is in the answer
    and nowhere else."""
    uses = body.get("uses", 1)
    if type(uses) is not int:
        return JSONResponse({"detail": "uses must be a whole number"}, status_code=422)
    try:
        made = _make_token(
            request,
            principal,
            site=str(body.get("site") or ""),
            device_class=str(body.get("class", "")),
            group=str(body["group"]) if body.get("group") else None,
            uses=uses,
            expires=str(body.get("expires", "7d")),
            via="api",
        )
    except TokenError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return {
        "token": made.text,
        "token_id": made.token_id,
        "site": made.site,
        "class": made.device_class,
        "group": made.group,
        "uses": made.uses,
        "expires_ms": made.expires_ms,
        "command": made.command,
        "broker_note": made.broker_note,
    }


@router.post("/api/devices/tokens/revoke", tags=["dashboard"], response_model=None)
def revoke_token_json(
    request: Request, principal: _MANAGE, body: Annotated[dict[str, Any], Body()]
) -> Any:
    """Revoke a token: {"token_id"}."""
    try:
        row = _revoke_token(request, principal, str(body.get("token_id", "")), "api")
    except TokenError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return _token_json(row, _now_ms())
