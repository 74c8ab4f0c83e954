"""GET and POST /login, POST /logout: public routes, rate-limited, CSRF-protected.

The login form has no session yet, so its CSRF token is a double-submit cookie (a random value
in a cookie and in the form); the Origin check in security.py stands in front of it too."""

from __future__ import annotations

import hmac
import logging
import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from hub.web.accounts import authenticate
from hub.web.auth import Needs, check_csrf, client_address, web_context
from hub.web.permissions import Permission, Principal
from hub.web.sessions import end_session, open_session

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "hedgerow_login"


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (never //host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _login_page(request: Request, next_url: str, error: str | None, status: int) -> Response:
    ctx = web_context(request)
    token = secrets.token_urlsafe(24)
    response = ctx.templates.TemplateResponse(
        request,
        "login.html",
        {"next": next_url, "csrf": token, "error": error, "principal": None},
        status_code=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        secure=True,  # TLS, or loopback: a secure context either way
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    """The login form."""
    return _login_page(request, safe_next(next), None, 200)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the password (rate-limited per account and address) and start a session."""
    ctx = web_context(request)
    target = safe_next(next)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, csrf):
        return _login_page(request, target, "The form had expired. Please try again.", 403)
    username = username.strip().lower()
    address = client_address(request)
    wait = ctx.limiter.wait_s(username, address)
    if wait > 0:
        minutes = max(1, math.ceil(wait / 60))
        log.warning("login for %r from %s refused: rate limited", username, address)
        return _login_page(
            request,
            target,
            f"Too many failed attempts. Please wait {minutes} minute(s) and try again.",
            429,
        )
    with ctx.db() as db:
        account = authenticate(db, username, password)
        if account is None:
            ctx.limiter.failed(username, address)
            log.info("failed login for %r from %s", username, address)
            return _login_page(request, target, "That username and password do not match.", 401)
        ctx.limiter.succeeded(username)
        session_id = open_session(db, account, ctx.limits, address)
    log.info("%s logged in from %s", account.username, address)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        ctx.cookie,
        session_id,
        path="/",
        secure=True,  # TLS, or loopback: a secure context either way
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", secure=True, httponly=True)
    return response


@router.post("/logout")
def logout(
    request: Request,
    principal: Annotated[Principal, Depends(Needs(Permission.HOME))],
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """End the session."""
    check_csrf(request, csrf)
    ctx = web_context(request)
    with ctx.db() as db:
        end_session(db, request.state.session_id)
    log.info("%s logged out", principal.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(ctx.cookie, path="/", secure=True, httponly=True, samesite="strict")
    return response
