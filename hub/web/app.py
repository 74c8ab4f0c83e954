"""create_app: the dashboard as one FastAPI application (pages, JSON API, static files)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from hub.config import HubConfig
from hub.store import Database
from hub.web import api, login, pages
from hub.web.auth import CsrfRefused, NotLoggedIn, web_context
from hub.web.checks import router as checks_router
from hub.web.concerns import router as concerns_router
from hub.web.context import HERE, WebContext, make_templates
from hub.web.devices import router as devices_router
from hub.web.filtering import router as filtering_router
from hub.web.permissions import ROLE_PERMISSIONS, Forbidden, Permission, Principal
from hub.web.queue import QueueError
from hub.web.ratelimit import LoginLimiter
from hub.web.reports import router as reports_router
from hub.web.security import SecurityMiddleware
from hub.web.sessions import SessionLimits, csrf_token

# Routes anyone may reach: logging in, the stylesheet, the API's description.
PUBLIC_PATHS = frozenset({"/login", "/static", "/api/openapi.json"})


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _refusal(request: Request, status: int, message: str) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status)
    principal: Principal | None = getattr(request.state, "principal", None)
    session_id: str | None = getattr(request.state, "session_id", None)
    return web_context(request).templates.TemplateResponse(
        request,
        "error.html",
        {
            "principal": principal,
            "can": ROLE_PERMISSIONS[principal.role] if principal else frozenset(),
            "P": Permission,
            "csrf": csrf_token(session_id) if session_id else None,
            "status": status,
            "message": message,
        },
        status_code=status,
    )


def _field(loc: Sequence[object]) -> str:
    """The field a validation error is about: the last name in its location (not a list index)."""
    return next((str(part) for part in reversed(loc) if isinstance(part, str)), "form")


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotLoggedIn)
    def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": "log in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        return _refusal(request, 403, "Your role does not allow you to see this page.")

    @app.exception_handler(CsrfRefused)
    def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return _refusal(request, 403, "The form had expired or did not come from this page.")

    @app.exception_handler(pages.AlertMissing)
    def missing(request: Request, exc: pages.AlertMissing) -> Response:
        return _refusal(request, 404, "There is no such alert.")

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        if request.method in ("GET", "HEAD"):
            return _refusal(request, 400, "The address asks for something this page cannot show.")
        # A form: say which field and why (pydantic's words; never the value sent).
        why = "; ".join(f"{_field(e.get('loc', ()))}: {e['msg']}" for e in exc.errors())
        return _refusal(request, 400, f"The form sent something this page cannot take ({why}).")

    @app.exception_handler(QueueError)
    def bad_filter(request: Request, exc: QueueError) -> Response:
        return _refusal(request, 400, str(exc))


def create_app(config: HubConfig, db_factory: Callable[[], Database]) -> FastAPI:
    """The dashboard for this hub. `db_factory` opens a new connection; each handler opens
    and closes its own in the thread that uses it."""
    web = config.web
    app = FastAPI(
        title="Hedgerow safeguarding dashboard",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the docs UI loads its script from a CDN: school hubs may be offline
        redoc_url=None,
    )
    app.state.hub_config = config  # context.hub_config: enrolment, revocation, filtering
    app.state.web = WebContext(
        config=web,
        db_factory=db_factory,
        limits=SessionLimits(
            absolute_ms=web.session_hours * 3_600_000, idle_ms=web.idle_minutes * 60_000
        ),
        limiter=LoginLimiter(),
        templates=make_templates(),
    )
    app.include_router(login.router)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(concerns_router)
    app.include_router(checks_router)
    app.include_router(reports_router)
    app.include_router(devices_router)
    app.include_router(filtering_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_handlers(app)
    app.add_middleware(SecurityMiddleware, tls=web.tls, base_url=web.base_url)
    return app
