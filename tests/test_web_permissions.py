"""One permission check for pages and API: every route declares its permission, the role table
says who holds what, and each role gets 403 where it must from the real server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

from hub.concerns import open_concern
from hub.config import parse_config
from hub.store import Database
from hub.web.app import PUBLIC_PATHS, create_app
from hub.web.auth import Needs
from hub.web.permissions import (
    ROLE_PERMISSIONS,
    Forbidden,
    Permission,
    Principal,
    Role,
    allowed,
    require,
    require_item,
)
from tests.services import mosquitto
from tests.web_support import SITE, DashboardHub, dashboard_hub, http, login_cookie

P = Permission
# What each route needs, written out by hand: a new route fails the test until it is added here.
ROUTES: dict[tuple[str, str], Permission | None] = {
    ("GET", "/login"): None,
    ("POST", "/login"): None,
    ("POST", "/logout"): P.HOME,
    ("GET", "/"): P.HOME,
    ("GET", "/alerts"): P.ALERTS_VIEW,
    ("GET", "/alerts/{alert_id}"): P.ALERTS_VIEW,
    ("POST", "/alerts/{alert_id}/{action}"): P.ALERTS_ACT,
    ("GET", "/access-log"): P.ACCESS_LOG_VIEW,
    ("GET", "/concerns"): P.CONCERNS_VIEW,
    ("POST", "/concerns"): P.CONCERNS_OPEN,
    ("GET", "/concerns/new"): P.CONCERNS_OPEN,
    ("GET", "/concerns/{concern_id}"): P.CONCERNS_VIEW,
    ("GET", "/concerns/{concern_id}/amend"): P.CONCERNS_VIEW,
    ("POST", "/concerns/{concern_id}/amend"): P.CONCERNS_VIEW,
    ("GET", "/concerns/{concern_id}/export"): P.CONCERNS_VIEW,
    ("POST", "/concerns/{concern_id}/sign-off"): P.CONCERNS_VIEW,
    ("GET", "/chronology"): P.CONCERNS_VIEW,
    ("GET", "/checks"): P.CHECKS_VIEW,
    ("POST", "/checks"): P.CHECKS_RECORD,
    ("GET", "/reports"): P.REPORTS_VIEW,
    ("GET", "/reports/weekly"): P.REPORTS_VIEW,
    ("GET", "/reports/annual"): P.REPORTS_VIEW,
    ("GET", "/reports/annual.pdf"): P.REPORTS_VIEW,
    ("GET", "/reports/annual/{table}.csv"): P.REPORTS_VIEW,
    ("POST", "/reports/annual/sign"): P.REPORTS_VIEW,
    ("GET", "/devices"): P.DEVICES_VIEW,
    ("GET", "/devices/{site}/{device}"): P.DEVICES_VIEW,
    ("POST", "/devices/{site}/{device}/revoke"): P.DEVICES_MANAGE,
    ("GET", "/devices/tokens"): P.DEVICES_MANAGE,
    ("POST", "/devices/tokens"): P.DEVICES_MANAGE,
    ("POST", "/devices/tokens/revoke"): P.DEVICES_MANAGE,
    ("GET", "/filtering"): P.AGGREGATES_VIEW,
    ("GET", "/api/me"): P.HOME,
    ("GET", "/api/devices"): P.DEVICES_VIEW,
    ("GET", "/api/devices/{site}/{device}"): P.DEVICES_VIEW,
    ("POST", "/api/devices/{site}/{device}/revoke"): P.DEVICES_MANAGE,
    ("GET", "/api/devices/tokens"): P.DEVICES_MANAGE,
    ("POST", "/api/devices/tokens"): P.DEVICES_MANAGE,
    ("POST", "/api/devices/tokens/revoke"): P.DEVICES_MANAGE,
    ("GET", "/api/filtering"): P.AGGREGATES_VIEW,
    ("GET", "/api/filtering/policy"): P.AGGREGATES_VIEW,
    ("GET", "/api/alerts"): P.ALERTS_VIEW,
    ("GET", "/api/alerts/new"): P.ALERTS_VIEW,
    ("GET", "/api/alerts/{alert_id}"): P.ALERTS_VIEW,
    ("POST", "/api/alerts/{alert_id}/acknowledge"): P.ALERTS_ACT,
    ("POST", "/api/alerts/{alert_id}/assign"): P.ALERTS_ACT,
    ("POST", "/api/alerts/{alert_id}/note"): P.ALERTS_ACT,
    ("POST", "/api/alerts/{alert_id}/escalate"): P.ALERTS_ACT,
    ("POST", "/api/alerts/{alert_id}/close"): P.ALERTS_ACT,
    ("POST", "/api/alerts/{alert_id}/reopen"): P.ALERTS_ACT,
    ("GET", "/api/concerns"): P.CONCERNS_VIEW,
    ("POST", "/api/concerns"): P.CONCERNS_OPEN,
    ("GET", "/api/concerns/{concern_id}"): P.CONCERNS_VIEW,
    ("POST", "/api/concerns/{concern_id}/amend"): P.CONCERNS_VIEW,
    ("POST", "/api/concerns/{concern_id}/sign-off"): P.CONCERNS_VIEW,
    ("GET", "/api/chronology"): P.CONCERNS_VIEW,
    ("GET", "/api/checks"): P.CHECKS_VIEW,
    ("POST", "/api/checks"): P.CHECKS_RECORD,
    ("POST", "/api/checks/selftest"): P.CHECKS_RECORD,
    ("GET", "/api/reports/weekly"): P.REPORTS_VIEW,
    ("GET", "/api/reports/annual"): P.REPORTS_VIEW,
    ("GET", "/api/summary"): P.AGGREGATES_VIEW,
    ("GET", "/api/openapi.json"): None,
}
# Who may see an individual's alert: never a governor, technician or admin.
INDIVIDUALS = {Role.DSL, Role.DSL_LIMITED, Role.COORDINATOR}


def _declared(route: APIRoute) -> list[Permission]:
    found: list[Permission] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dep = pending.pop()
        if isinstance(dep.call, Needs):
            found.append(dep.call.permission)
        pending.extend(dep.dependencies)
    return found


def _flat(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too: FastAPI 0.16x keeps an included router as
    one entry of app.routes that holds the original router (no prefix is given at include)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def _app_routes(tmp_path: Path) -> dict[tuple[str, str], Permission | None]:
    config = parse_config({"hub": {"site": "s"}}, tmp_path / "hub.toml")
    app = create_app(config, lambda: Database(f"sqlite:///{tmp_path}/hub.db"))
    found: dict[tuple[str, str], Permission | None] = {}
    for route in _flat(app.routes):
        if isinstance(route, Mount):
            assert route.path in PUBLIC_PATHS, route.path
            continue
        if isinstance(route, APIRoute):
            declared = _declared(route)
            assert len(declared) <= 1, (route.path, declared)
            for method in route.methods or ():
                found[(method, route.path)] = declared[0] if declared else None
        else:
            assert isinstance(route, Route)
            for method in route.methods or ():
                if method != "HEAD":
                    found[(method, route.path)] = None
    return found


def test_every_route_declares_its_permission(tmp_path: Path) -> None:
    found = _app_routes(tmp_path)
    assert found == ROUTES
    for (_, path), permission in found.items():
        if permission is None:
            assert path in PUBLIC_PATHS, f"{path} declares no permission and is not public"


@pytest.mark.parametrize("role", list(Role))
def test_only_safeguarding_roles_see_individuals(role: Role) -> None:
    who = Principal(1, "x", role, frozenset({"y7"}))
    assert allowed(who, P.ALERTS_VIEW) == (role in INDIVIDUALS)
    assert allowed(who, P.ACCESS_LOG_VIEW) == (role in {Role.DSL, Role.ADMIN})
    assert allowed(who, P.HOME)
    if role is Role.GOVERNOR:
        assert ROLE_PERMISSIONS[role] == {P.HOME, P.AGGREGATES_VIEW, P.CHECKS_VIEW, P.REPORTS_VIEW}


@pytest.mark.parametrize(
    ("role", "group", "ok"),
    [
        (Role.DSL_LIMITED, "y7", True),
        (Role.DSL_LIMITED, "y9", False),
        (Role.DSL_LIMITED, None, False),  # an alert of no group is nobody's chosen group
        (Role.DSL, "y9", True),
        (Role.DSL, None, True),
        (Role.GOVERNOR, "y7", False),
    ],
)
def test_limited_roles_see_only_their_groups(role: Role, group: str | None, ok: bool) -> None:
    who = Principal(1, "x", role, frozenset({"y7"}) if role is Role.DSL_LIMITED else frozenset())
    if ok:
        require_item(who, P.ALERTS_VIEW, group)
    else:
        with pytest.raises(Forbidden):
            require_item(who, P.ALERTS_VIEW, group)
    if group is not None:
        assert allowed(who, P.ALERTS_VIEW, group=group) == ok


def test_require_raises_for_a_missing_permission() -> None:
    with pytest.raises(Forbidden):
        require(Principal(1, "g", Role.GOVERNOR), P.ALERTS_VIEW)
    require(Principal(1, "g", Role.GOVERNOR), P.AGGREGATES_VIEW)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DashboardHub, dict[str, str]]]:
    """A real hub with an account per role, one alert and one concern in group y7, and what to
    put in each path parameter of ROUTES."""
    root = tmp_path_factory.mktemp("perm") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as hub:
        for role in Role:
            hub.add_user(f"u-{role}", str(role), *(["y7"] if role is Role.DSL_LIMITED else []))
        alert_id = hub.add_alert(5, "y7")
        db = hub.db()
        try:
            with db.transaction():
                concern_id = open_concern(
                    db,
                    at_ms=int(time.time() * 1000),
                    actor="u-dsl",
                    role="dsl",
                    group="y7",
                    values={"pupil": "P-1", "category": "online safety", "seen": "a page"},
                )
        finally:
            db.close()
        yield (
            hub,
            {
                "{alert_id}": str(alert_id),
                "{action}": "note",
                "{concern_id}": str(concern_id),
                "{table}": "alerts",
                "{site}": SITE,
                "{device}": "lt-unknown",  # a 404 for those let in; a revoke changes nothing
            },
        )


@pytest.mark.parametrize("role", list(Role))
def test_each_route_answers_each_role_as_the_table_says(
    served: tuple[DashboardHub, dict[str, str]], role: Role
) -> None:
    """A role holding the permission is let in (whatever the handler then makes of a bare
    form: a page, a redirect, a 400/404/409/422, never 401, 403 or a 500); a role without it
    gets 403; nobody logged in is sent to log in (pages) or told 401 (the API)."""
    hub, params = served
    cookie = login_cookie(hub, f"u-{role}")
    home = http(hub, "GET", "/", cookie=cookie)
    csrf = re.search(r'name="csrf" value="([^"]+)"', home.body)
    assert csrf is not None
    for (method, path), permission in ROUTES.items():
        if permission is None or path == "/logout":
            continue
        url = path
        for name, value in params.items():
            url = url.replace(name, value)
        assert "{" not in url, f"fill the path parameter of {path} in the served fixture"
        # The group is what a limited DSL must name to open a concern in one of theirs.
        form = {"csrf": csrf.group(1), "group": "y7"} if method == "POST" else None
        answer = http(hub, method, url, cookie=cookie, form=form)
        if permission in ROLE_PERMISSIONS[role]:
            ok = answer.status not in (401, 403) and answer.status < 500
            assert ok, (role, method, path, answer.status)
        else:
            assert answer.status == 403, (role, method, path, answer.status)
        # Nobody logged in: pages send to the login page, the API says 401.
        anonymous = http(hub, method, url, form=form)
        assert anonymous.status == (401 if path.startswith("/api/") else 303), (method, path)
