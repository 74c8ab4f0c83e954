"""Who is asking: the session cookie read into a Principal, and the FastAPI dependency every
protected route declares with its permission (one check for pages and the JSON API)."""

from __future__ import annotations

from fastapi import Request

from hub.web.context import WebContext
from hub.web.permissions import Permission, Principal, require
from hub.web.sessions import csrf_valid, session_account


class NotLoggedIn(Exception):
    """No live session: pages redirect to the login page, the API answers 401."""


class CsrfRefused(Exception):
    """A form arrived without this session's CSRF token: answered 403."""


def web_context(request: Request) -> WebContext:
    """The dashboard's shared state."""
    ctx: WebContext = request.app.state.web
    return ctx


class Needs:
    """The dependency of a route that needs `permission`: returns the Principal, or raises
    NotLoggedIn or Forbidden. tests/test_web_permissions.py reads `.permission` off every
    route to prove each declares one."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    def __call__(self, request: Request) -> Principal:
        """Run per request (in the thread pool: it reads the database)."""
        ctx = web_context(request)
        session_id = request.cookies.get(ctx.cookie)
        if not session_id:
            raise NotLoggedIn()
        with ctx.db() as db:
            account = session_account(db, session_id, ctx.limits)
        if account is None:
            raise NotLoggedIn()
        principal = account.principal
        request.state.principal = principal
        request.state.session_id = session_id
        require(principal, self.permission)
        return principal


def check_csrf(request: Request, token: str) -> None:
    """Raise CsrfRefused unless `token` is the CSRF token of the request's session."""
    session_id: str | None = getattr(request.state, "session_id", None)
    if session_id is None or not token or not csrf_valid(session_id, token):
        raise CsrfRefused()


def client_address(request: Request) -> str:
    """The client's address as the socket saw it (no proxy headers are trusted)."""
    return request.client.host if request.client else "unknown"
