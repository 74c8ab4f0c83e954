"""What every request handler of the dashboard shares: settings, database, templates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from hub.config import HubConfig, WebConfig
from hub.notify.settings import NotifySettings, load_notify_settings
from hub.store import Database
from hub.web.ratelimit import LoginLimiter
from hub.web.sessions import SessionLimits

HERE = Path(__file__).parent
SEVERITY_WORDS = {1: "information", 2: "low", 3: "medium", 4: "high", 5: "urgent"}
# Shapes, not colours, carry the severity for anyone who cannot tell the colours apart.
SEVERITY_ICONS = {1: "○", 2: "▽", 3: "◆", 4: "▲", 5: "⬣"}


# `__Host-`: the browser insists on Secure, Path=/ and no Domain, so no sibling host can set or
# read it. Secure is set even on plain HTTP: the hub serves plain HTTP only on loopback, which
# browsers count as a secure context (Chromium 156 keeps a Secure `__Host-` cookie from
# http://127.0.0.1 and http://localhost; tests/test_web_browser.py relies on it).
SESSION_COOKIE = "__Host-hedgerow_session"


def when(ms: int) -> str:
    """A time for people: UTC, to the minute."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class WebContext:
    """The dashboard's shared state, kept in app.state.web."""

    config: WebConfig
    db_factory: Callable[[], Database]
    limits: SessionLimits
    limiter: LoginLimiter
    templates: Jinja2Templates

    @property
    def cookie(self) -> str:
        """The session cookie's name."""
        return SESSION_COOKIE

    @contextmanager
    def db(self) -> Iterator[Database]:
        """A database connection for this thread, closed after use: handlers run in a thread
        pool and a connection never moves between threads."""
        db = self.db_factory()
        try:
            yield db
        finally:
            db.close()


def hub_config(request: Request) -> HubConfig:
    """The hub's whole configuration (app.state.hub_config, set by create_app): enrolment,
    revocation and the filtering policy need its keys, policy and broker settings."""
    config: HubConfig = request.app.state.hub_config
    return config


def notify_of(request: Request) -> NotifySettings:
    """The contacts and escalation chain, as hub.toml said when the hub started (escalating an
    alert to the DSL tells the DSL at once)."""
    return load_notify_settings(hub_config(request))


def make_templates() -> Jinja2Templates:
    """The Jinja2 environment: autoescaping on, with the helpers the templates use."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        severity_word=SEVERITY_WORDS.get, severity_icon=SEVERITY_ICONS.get, when=when
    )
    return templates
