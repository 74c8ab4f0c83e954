"""Accessibility: axe-core at WCAG 2.2 AA on every page the dashboard serves, in Debian's
Chromium against a real `hedgerow-hub serve` holding alerts, concerns, checks and devices.

The pages are found from the app's own routes (as tests/test_web_permissions.py finds them), so
a page added later is checked without touching this file, unless its path has a parameter this
file cannot fill: then the test says so. Each page is opened as every role that may open it.
Also checked: the login page (plain and refused), forms showing a validation error, and the
queue and an alert 320 px wide. axe-core is the npm release scripts/bootstrap.sh fetches and
verifies (requirements/axe-core.txt)."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import Browser, BrowserContext, Page

from hub import alert_triage, alerts
from hub import concerns as concern_store
from hub.checks import add_check, sign_review
from hub.config import parse_config
from hub.reports import academic_year
from hub.store import Database
from hub.web.app import PUBLIC_PATHS, create_app
from hub.web.permissions import ROLE_PERMISSIONS, Permission, Role
from tests.services import mosquitto
from tests.test_web_permissions import _declared, _flat
from tests.web_support import (
    SITE,
    DashboardHub,
    browser_login,
    dashboard_hub,
    http,
    login_cookie,
)

AXE = Path(__file__).resolve().parent.parent / ".venv" / "axe-core" / "axe.min.js"
# WCAG 2.0, 2.1 and 2.2 at levels A and AA. axe has no wcag22a tag: it has no automated rule
# for the criteria 2.2 added at level A; those it added at AA are tagged wcag22aa.
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
# GET paths that are not pages: the JSON API and its description, the stylesheet and scripts.
NOT_PAGES = ("/api/", "/static")
# Query strings a page needs to show anything but "ask for something" (default: none).
QUERIES: dict[str, list[str]] = {
    "/chronology": ["pupil=pupil-17", "device=school/lt-042"],
    "/concerns/new": ["", "alerts={alerts}", "recorded={concern}"],
    "/alerts": ["", "status=all"],
}
# Answers other than 200 that are right: without the optional pdf extra the PDF is refused with
# a page saying to print instead (that page is checked too).
EXPECTED_STATUS: dict[str, int] = {
    "/reports/annual.pdf": 200 if find_spec("weasyprint") else 400,
}
USERS = {role: f"a11y-{role}".replace("_", "-") for role in Role}


def _axe_source() -> str:
    if not AXE.is_file():
        raise AssertionError(
            f"{AXE} is missing: run 'make bootstrap' (it fetches the axe-core release pinned "
            "in requirements/axe-core.txt from the npm registry and checks its sha512)"
        )
    return AXE.read_text()


@dataclass(frozen=True)
class PageRoute:
    """A GET page of the app and the permission it declares."""

    path: str
    permission: Permission


def page_routes(tmp: Path) -> list[PageRoute]:
    """Every GET page the app serves, with its permission; public routes other than the login
    page (checked on its own) fail, as does a page that declares no permission."""
    config = parse_config({"hub": {"site": "s"}}, tmp / "hub.toml")
    app = create_app(config, lambda: Database(f"sqlite:///{tmp}/unused.db"))
    found: list[PageRoute] = []
    for route in _flat(app.routes):
        if not isinstance(route, APIRoute) or "GET" not in (route.methods or ()):
            continue
        if route.path.startswith(NOT_PAGES) or route.path == "/login":
            continue
        declared = _declared(route)
        assert declared, f"GET {route.path} declares no permission and is not public"
        found.append(PageRoute(route.path, declared[0]))
    assert not {r.path for r in found} & PUBLIC_PATHS
    return found


@dataclass(frozen=True)
class Seeded:
    """The hub and the ids of what was written into it."""

    hub: DashboardHub
    fill: dict[str, list[str]]  # path parameter -> values to try
    alerts: str  # "a,b": the alerts a concern is opened from

    def urls(self, route: PageRoute) -> list[str]:
        """The route's path with each combination of known values, and each query it needs."""
        names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
        missing = [n for n in names if n not in self.fill]
        assert not missing, (
            f"GET {route.path}: no value for {missing} in tests/test_web_axe.py: write data "
            "the page can show in the `seeded` fixture and add its id to `fill`"
        )
        urls = []
        for values in itertools.product(*(self.fill[n] for n in names)):
            path = route.path
            for name, value in zip(names, values, strict=True):
                path = re.sub(r"{" + name + r"(?::\w+)?}", value, path)
            for query in QUERIES.get(route.path, [""]):
                query = query.format(alerts=self.alerts, concern=self.fill["concern_id"][0])
                urls.append(path + (f"?{query}" if query else ""))
        return urls


def _report(db: Database, device: str, kind: str, at_ms: int, body: dict[str, Any]) -> None:
    """A report as ingest stores it (compact JSON body)."""
    seq = int(
        db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE device = ?", (device,))[0][
            0
        ]
    )
    db.insert(
        "INSERT INTO reports (site, device, seq, kind, digest, time_ms, received_ms, client_ip, "
        "client_user, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            SITE,
            device,
            seq,
            kind,
            bytes(32),
            at_ms,
            at_ms,
            "10.0.0.7",
            "pupil-17",
            json.dumps(body, separators=(",", ":")),
        ),
    )


def _seed(hub: DashboardHub) -> Seeded:
    """Accounts for every role; alerts with a trail, timeline and earlier alerts; concerns
    open and signed off; checks of each result; devices; blocked attempts; a signed review."""
    for role, username in USERS.items():
        hub.add_user(username, str(role), *(["y7"] if role is Role.DSL_LIMITED else []))
    now = int(time.time() * 1000)
    closed = hub.add_alert(3, "y7")
    escalated = hub.add_alert(5, "y7", name="worse.example")
    hub.add_alert(4, "y9", device="lt-043")
    dsl = USERS[Role.DSL]
    db = hub.db()
    try:
        with db.transaction():
            for device, group in (("lt-042", "y7"), ("lt-043", "y9")):
                db.execute(
                    "INSERT INTO devices (site, device, class, grp, verify_key, hostname, "
                    "enrolled_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (SITE, device, "pupil-laptop", group, bytes(32), device, now - 86_400_000, now),
                )
            state = {"type": "site_state", "at": now, "detail": {"state": "off_site"}}
            _report(db, "lt-042", "event", now, state)
            _report(db, "lt-042", "event", now, {"type": "bypass", "detail": {"method": "doh"}})
            beat = {"site_state": "off_site", "policy_version": 1, "software": "0.1.0"}
            _report(db, "lt-042", "heartbeat", now, {**beat, "spool_depth": 2, "health": []})
            _report(db, "lt-043", "heartbeat", now, {**beat, "health": ["resolver: changed"]})
            for day in range(3):
                where = {"site": {"off_site_s": 3600 * (day + 1), "on_site_s": 7200}}
                _report(db, "lt-042", "summary", now - day * 86_400_000, where)
            for category, count in (("self-harm", 3), ("gambling", 5), ("adult", 2)):
                db.execute(
                    "INSERT INTO attempts (report_id, site, device, client_ip, category, count, "
                    "time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (1, SITE, "lt-042", "10.0.0.7", category, count, now),
                )
            alerts.acknowledge(db, closed, now + 1000, dsl, "looking")
            alert_triage.close_with_outcome(db, closed, now + 2000, dsl, "early_help", "spoken to")
            alerts.acknowledge(db, escalated, now + 1000, USERS[Role.COORDINATOR])
            alert_triage.assign(db, escalated, now + 2000, dsl, dsl, "for the DSL")
            alert_triage.add_note(db, escalated, now + 3000, dsl, "parents called")
            alert_triage.escalate_to_dsl(db, escalated, now + 4000, dsl, "a pattern")
            values = {"pupil": "pupil-17", "category": "self-harm or suicide", "seen": "searches"}
            linked = [alerts.get_alert(db, i) for i in (closed, escalated)]
            opened = concern_store.open_concern(
                db, at_ms=now, actor=dsl, role="dsl", group="y7", values=values, alerts=linked
            )
            concern_store.amend(
                db,
                opened,
                at_ms=now + 1000,
                actor=dsl,
                role="dsl",
                values={**values, "parents_informed": "yes", "outcome": "early help"},
                reason="parents told",
            )
            signed = concern_store.open_concern(
                db, at_ms=now, actor=dsl, role="dsl", group="y7", values=values
            )
            concern_store.sign_off(db, signed, at_ms=now + 1000, actor=dsl, role="dsl", note="")
            for kind, result, action in (
                ("manual", "pass", ""),
                ("selftest", "partial", "asked the supplier"),
                ("manual", "fail", ""),
            ):
                add_check(
                    db,
                    at_ms=now - 1000,
                    recorded_ms=now,
                    recorded_by=USERS[Role.TECHNICIAN],
                    kind=kind,
                    what="SWGfL Test Filtering",
                    result=result,
                    action=action,
                    passed=3 if kind == "selftest" else None,
                    failed=1 if kind == "selftest" else None,
                )
            label = academic_year(None, now).label
            sign_review(db, label, now, USERS[Role.GOVERNOR], "governor", "A. Patel, chair", "")
    finally:
        db.close()
    # A view in the access log before anyone reads it.
    assert http(hub, "GET", f"/alerts/{escalated}", cookie=login_cookie(hub, dsl)).status == 200
    fill = {
        "alert_id": [str(escalated), str(closed)],
        "concern_id": [str(opened), str(signed)],
        "table": ["roles"],
        "site": [SITE],
        "device": ["lt-042"],
    }
    return Seeded(hub, fill, f"{closed},{escalated}")


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe.min.js, or a failure saying how to get it."""
    return _axe_source()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A real hub with something on every page."""
    root = tmp_path_factory.mktemp("axe") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as hub:
        yield _seed(hub)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> list[PageRoute]:
    """The app's GET pages."""
    return page_routes(tmp_path_factory.mktemp("routes"))


def _target(node: dict[str, Any]) -> str:
    # A target is a list of selectors, one per frame or shadow root on the way.
    return " >> ".join(t if isinstance(t, str) else " ".join(t) for t in node["target"])


def axe_violations(page: Page, source: str, where: str) -> list[str]:
    """Run axe on the page as it stands; one readable line block per violation. axe goes in
    by page.evaluate (DevTools protocol), which the page's strict CSP does not govern."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate("() => {\n" + source + "\n}")
    result = page.evaluate(
        "opts => window.axe.run(document, opts)",
        {"runOnly": {"type": "tag", "values": TAGS}, "resultTypes": ["violations"]},
    )
    lines = []
    for v in result["violations"]:
        nodes = "\n".join(
            f"      {_target(n)}: {str(n.get('failureSummary', '')).splitlines()[-1].strip()}"
            for n in v["nodes"]
        )
        lines.append(
            f"{where}: {v['id']} ({v['impact']}): {v['help']}\n    {v['helpUrl']}\n{nodes}"
        )
    return lines


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / (re.sub(r"[^\w.-]+", "_", name) + ".png")), full_page=True)


def _logged_in(context: BrowserContext, hub: DashboardHub, role: Role) -> Page:
    page = context.new_page()
    page.goto(hub.url + "/")
    browser_login(page, hub, USERS[role])
    page.wait_for_url(hub.url + "/")
    return page


def check_url(
    page: Page, seeded: Seeded, url: str, source: str, where: str, shots: Path
) -> list[str]:
    """Open one page and run axe on it. A download (by its Content-Type and
    Content-Disposition) is checked only when it is an HTML document, on a blank page."""
    hub = seeded.hub
    path = url.split("?")[0]
    expected = next((s for p, s in EXPECTED_STATUS.items() if path == p), 200)
    answer = page.request.get(hub.url + url, max_redirects=0)
    assert answer.status == expected, (
        f"{where}: HTTP {answer.status} (if the page needs a query, add it to QUERIES): "
        f"{answer.text()[:300]}"
    )
    content_type = answer.headers.get("content-type", "")
    attachment = answer.headers.get("content-disposition", "").startswith("attachment")
    if not content_type.startswith("text/html"):
        return []  # CSV, PDF, plain text: not a page
    if attachment:
        page.goto("about:blank")
        page.set_content(answer.text())
    else:
        response = page.goto(hub.url + url)
        assert response is not None and response.status == expected, where
    _shot(page, shots, where)
    return axe_violations(page, source, where)


def test_axe_finds_what_it_must(browser: Browser, axe_source: str) -> None:
    """The oracle: the harness reports violations when there are some."""
    page = browser.new_page()
    try:
        page.set_content("<html><body><img src='x.png'><input></body></html>")
        found = "\n".join(axe_violations(page, axe_source, "broken"))
        for rule in ("html-has-lang", "image-alt", "label"):
            assert f"broken: {rule} (" in found, found
        assert "https://dequeuniversity.com/rules/axe/" in found
        assert "img" in found  # the target selector
    finally:
        page.close()


def test_every_page_route_is_filled_and_someone_may_open_it(
    pages: list[PageRoute], seeded: Seeded
) -> None:
    assert {"/", "/alerts", "/alerts/{alert_id}", "/concerns/{concern_id}"} <= {
        r.path for r in pages
    }
    for route in pages:
        assert seeded.urls(route), route.path
        assert any(route.permission in ROLE_PERMISSIONS[r] for r in Role), route.path


@pytest.mark.parametrize("role", list(Role))
def test_every_page_a_role_may_open_has_no_violations(
    role: Role,
    pages: list[PageRoute],
    seeded: Seeded,
    browser: Browser,
    axe_source: str,
    tmp_path: Path,
) -> None:
    context = browser.new_context()
    try:
        page = _logged_in(context, seeded.hub, role)
        problems: list[str] = []
        checked = []
        for route in pages:
            if route.permission not in ROLE_PERMISSIONS[role]:
                continue
            for url in seeded.urls(route):
                problems += check_url(page, seeded, url, axe_source, f"{url} as {role}", tmp_path)
                checked.append(url)
        assert "/" in checked
        assert not problems, f"{len(problems)} axe violations:\n" + "\n".join(problems)
    finally:
        context.close()


def test_login_page_plain_and_refused(
    seeded: Seeded, browser: Browser, axe_source: str, tmp_path: Path
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(seeded.hub.url + "/login")
        problems = axe_violations(page, axe_source, "/login")
        browser_login(page, seeded.hub, USERS[Role.DSL], "not the password at all")
        page.wait_for_selector("p.error")
        _shot(page, tmp_path, "login-refused")
        problems += axe_violations(page, axe_source, "/login refused")
        assert not problems, "\n".join(problems)
    finally:
        context.close()


# Forms sent with what the hub refuses: (role, page, form, fields to fill first).
REFUSED_FORMS: list[tuple[Role, str, str, dict[str, str]]] = [
    (Role.DSL, "/checks", "form[action='/checks']", {}),
    (Role.DSL, "/concerns/new?alerts={alerts}", "form[action='/concerns']", {}),
    (Role.DSL, "/concerns/{concern}/amend", "form[action='/concerns/{concern}/amend']", {}),
    (Role.DSL, "/reports/annual", "form[action='/reports/annual/sign']", {}),
    (Role.TECHNICIAN, "/devices/tokens", "form[action='/devices/tokens']", {"#expires": "soon"}),
]


def _send_past_browser_checks(page: Page, form: str, fields: dict[str, str]) -> None:
    """Fill and send the form past the browser's own `required` checks, to see the hub's."""
    page.eval_on_selector_all(
        f"{form} [required]", "nodes => nodes.forEach(n => n.removeAttribute('required'))"
    )
    for selector, value in fields.items():
        page.fill(f"{form} {selector}", value)
    page.click(f"{form} button[type=submit]")


@pytest.mark.parametrize(
    ("role", "url", "form", "fields"), REFUSED_FORMS, ids=[f[1] for f in REFUSED_FORMS]
)
def test_a_form_showing_a_validation_error(
    role: Role,
    url: str,
    form: str,
    fields: dict[str, str],
    seeded: Seeded,
    browser: Browser,
    axe_source: str,
    tmp_path: Path,
) -> None:
    hub = seeded.hub
    values = {"alerts": seeded.alerts, "concern": seeded.fill["concern_id"][0]}
    context = browser.new_context()
    try:
        page = _logged_in(context, hub, role)
        page.goto(hub.url + url.format(**values))
        _send_past_browser_checks(page, form.format(**values), fields)
        page.wait_for_selector("main [role=alert]")
        _shot(page, tmp_path, "refused")
        problems = axe_violations(page, axe_source, f"{url} refused")
        assert not problems, "\n".join(problems)
    finally:
        context.close()


def test_a_new_token_shown_once(
    seeded: Seeded, browser: Browser, axe_source: str, tmp_path: Path
) -> None:
    context = browser.new_context()
    try:
        page = _logged_in(context, seeded.hub, Role.TECHNICIAN)
        page.goto(seeded.hub.url + "/devices/tokens")
        page.click("form[action='/devices/tokens'] button[type=submit]")
        page.wait_for_selector("#new-token")
        _shot(page, tmp_path, "token")
        problems = axe_violations(page, axe_source, "/devices/tokens made")
        assert not problems, "\n".join(problems)
    finally:
        context.close()


def test_queue_and_alert_at_320_px(
    seeded: Seeded, browser: Browser, axe_source: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page = _logged_in(context, seeded.hub, Role.DSL)
        problems: list[str] = []
        for url in ("/alerts", f"/alerts/{seeded.fill['alert_id'][0]}"):
            problems += check_url(page, seeded, url, axe_source, f"{url} at 320px", tmp_path)
        assert not problems, "\n".join(problems)
    finally:
        context.close()


def test_queue_announcing_new_alerts(
    seeded: Seeded, browser: Browser, axe_source: str, tmp_path: Path
) -> None:
    """The queue once its script has said "1 new alert" (the page's clock is moved on, not
    waited for). The alert it adds, on a device of its own, changes no page another test
    fills."""
    context = browser.new_context()
    try:
        page = _logged_in(context, seeded.hub, Role.DSL)
        page.clock.install()
        page.goto(seeded.hub.url + "/alerts")
        seeded.hub.add_alert(2, "y7", device="lt-044")
        page.clock.run_for(31_000)
        page.wait_for_selector("#new-alerts a")
        assert "1 new alert" in page.inner_text("#new-alerts")
        _shot(page, tmp_path, "announced")
        problems = axe_violations(page, axe_source, "/alerts announcing")
        assert not problems, "\n".join(problems)
    finally:
        context.close()
