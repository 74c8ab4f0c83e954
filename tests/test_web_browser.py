"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real
`hedgerow-hub serve` (with a real Mosquitto). Screenshots are kept under tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext

from tests.services import mosquitto
from tests.web_support import (
    PASSWORD,
    SESSION_COOKIE,
    DashboardHub,
    browser_login,
    dashboard_hub,
    http,
    logged_in,
)

ROLES = ("dsl", "coordinator", "technician", "governor", "admin")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHub]:
    """One running hub for this module's tests, with an account per role."""
    root = tmp_path_factory.mktemp("web") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        for role in ROLES:
            running.add_user(f"{role}-1", role)
        running.add_user("limited-1", "dsl_limited", "y7")
        yield running


def test_email_link_lands_on_the_alert_after_login(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    alert_id = hub.add_alert(5, "y7", name="link.example")
    page = context.new_page()
    page.goto(f"{hub.url}/alerts/{alert_id}")  # what the alert email links to
    assert re.search(r"/login\?next=%2Falerts%2F\d+$", page.url)
    # Password managers and paste: the fields say what they hold, nothing blocks pasting.
    assert page.get_attribute("#username", "autocomplete") == "username"
    assert page.get_attribute("#password", "autocomplete") == "current-password"
    page.screenshot(path=tmp_path / "login.png")
    browser_login(page, hub, "dsl-1")
    page.wait_for_url(f"{hub.url}/alerts/{alert_id}")
    assert "lt-042 tried to open link.example" in page.inner_text("main")
    page.screenshot(path=tmp_path / "alert.png", full_page=True)
    cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"


def test_each_role_sees_what_it_may(hub: DashboardHub, browser: Browser, tmp_path: Path) -> None:
    alert_id = hub.add_alert(4, "y7")
    for role in ROLES:
        ctx = browser.new_context()
        try:
            page = logged_in(ctx, hub, f"{role}-1")
            page.screenshot(path=tmp_path / f"home-{role}.png")
            nav = page.inner_text("nav")
            detail = page.goto(f"{hub.url}/alerts/{alert_id}")
            assert detail is not None
            api = ctx.request.get(f"{hub.url}/api/alerts/{alert_id}")
            queue = ctx.request.get(f"{hub.url}/api/alerts")
            if role in ("dsl", "coordinator"):
                assert "Alerts" in nav
                assert detail.status == 200 and api.status == 200 and queue.status == 200
            else:
                assert "Alerts" not in nav
                assert detail.status == 403, role
                assert "does not allow" in page.inner_text("main")
                assert api.status == 403 and queue.status == 403, role
            if role == "governor":
                page.screenshot(path=tmp_path / "governor-403.png")
                page.goto(hub.url + "/")
                assert "Totals only" in page.inner_text("main")
                page.screenshot(path=tmp_path / "governor-home.png")
        finally:
            ctx.close()


def test_limited_dsl_sees_only_their_groups(hub: DashboardHub, context: BrowserContext) -> None:
    mine = hub.add_alert(3, "y7", device="lt-y7")
    theirs = hub.add_alert(3, "y9", device="lt-y9")
    page = logged_in(context, hub, "limited-1")
    page.goto(f"{hub.url}/alerts?status=all")
    text = page.inner_text("main")
    assert "lt-y7" in text and "lt-y9" not in text
    assert context.request.get(f"{hub.url}/api/alerts/{mine}").status == 200
    assert context.request.get(f"{hub.url}/api/alerts/{theirs}").status == 403
    listed = context.request.get(f"{hub.url}/api/alerts?status=all").json()
    assert {a["group"] for a in listed["alerts"]} == {"y7"}


def test_acknowledge_goes_to_the_trail_and_views_to_the_access_log(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    alert_id = hub.add_alert(5, "y8", device="lt-ack")
    page = logged_in(context, hub, "coordinator-1")
    page.goto(f"{hub.url}/alerts")
    page.click(f"a[href='/alerts/{alert_id}']")
    page.fill("#note", "Spoke to the class teacher")
    page.get_by_role("button", name="Acknowledge", exact=True).click()
    page.wait_for_url(f"{hub.url}/alerts/{alert_id}#trail")
    assert page.inner_text("#status") == "acknowledged"
    trail = page.inner_text("#trail")
    assert "acknowledged by coordinator-1: Spoke to the class teacher" in trail
    page.screenshot(path=tmp_path / "acknowledged.png", full_page=True)
    api = context.request.get(f"{hub.url}/api/alerts/{alert_id}").json()
    assert [t["action"] for t in api["trail"]] == ["opened", "acknowledged"]

    dsl = logged_in(context.browser.new_context(), hub, "dsl-1")  # type: ignore[union-attr]
    dsl.goto(f"{hub.url}/access-log?username=coordinator-1")
    log_text = dsl.inner_text("main")
    assert f"alert {alert_id}" in log_text and "page" in log_text and "api" in log_text
    dsl.screenshot(path=tmp_path / "access-log.png", full_page=True)
    dsl.context.close()


def test_forms_refuse_a_missing_token_or_a_foreign_origin(
    hub: DashboardHub, context: BrowserContext
) -> None:
    alert_id = hub.add_alert(4, "y8", device="lt-csrf")
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/alerts/{alert_id}")
    token = page.get_attribute("input[name=csrf]", "value")
    assert token
    target = f"{hub.url}/alerts/{alert_id}/acknowledge"
    same = {"Origin": hub.url, "Sec-Fetch-Site": "same-origin"}
    no_token = context.request.post(target, form={"note": "x"}, headers=same, max_redirects=0)
    assert no_token.status == 403
    wrong = context.request.post(target, form={"csrf": "0" * 64}, headers=same, max_redirects=0)
    assert wrong.status == 403
    foreign = context.request.post(
        target,
        form={"csrf": token},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        max_redirects=0,
    )
    assert foreign.status == 403 and "another site" in foreign.text()
    page.reload()
    assert page.inner_text("#status") == "open"  # none of them acted
    ok = context.request.post(target, form={"csrf": token}, headers=same, max_redirects=0)
    assert ok.status == 303


def test_sessions_end_on_disable_expiry_idleness_and_logout(
    hub: DashboardHub, browser: Browser
) -> None:
    for username in ("gone-1", "old-1", "idle-1", "out-1"):
        hub.add_user(username, "dsl")
    pages = {}
    for username in ("gone-1", "old-1", "idle-1", "out-1"):
        pages[username] = logged_in(browser.new_context(), hub, username)

    done = hub.user("disable", "gone-1")
    assert done.returncode == 0 and "1 session(s) ended" in done.stdout
    db = hub.db()
    try:
        # Time passing, written where the server reads it: past the absolute limit, and
        # unused longer than the idle limit.
        db.execute(
            "UPDATE web_sessions SET expires_ms = 1 WHERE user_id = "
            "(SELECT id FROM web_users WHERE username = 'old-1')"
        )
        db.execute(
            "UPDATE web_sessions SET last_seen_ms = 1 WHERE user_id = "
            "(SELECT id FROM web_users WHERE username = 'idle-1')"
        )
    finally:
        db.close()
    out = pages["out-1"]
    cookie = next(c for c in out.context.cookies() if c["name"] == SESSION_COOKIE)
    out.click("text=Log out")
    out.wait_for_url(re.compile(r".*/login.*"))
    replayed = http(hub, "GET", "/api/me", cookie=f"{SESSION_COOKIE}={cookie['value']}")
    assert replayed.status == 401  # the old cookie is dead on the server, not just deleted

    for username in ("gone-1", "old-1", "idle-1"):
        page = pages[username]
        page.goto(f"{hub.url}/alerts")
        assert "/login" in page.url, username
        assert page.context.request.get(f"{hub.url}/api/me").status == 401
    for page in pages.values():
        page.context.close()


def test_the_queue_fits_320_px(hub: DashboardHub, browser: Browser, tmp_path: Path) -> None:
    for severity in (1, 2, 3, 4, 5):
        hub.add_alert(
            severity,
            "y10",
            device="a-very-long-device-name-without-spaces-0123456789",
            name="an-extremely-long-blocked-domain-name-that-goes-on.example",
        )
    ctx = browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page = logged_in(ctx, hub, "dsl-1")
        page.goto(f"{hub.url}/alerts")
        page.screenshot(path=tmp_path / "queue-320.png", full_page=True)
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1] == 320, widths
        # Severity in words and a shape, not colour alone.
        labels = page.locator(".queue .sev-label").all_inner_texts()
        assert any("urgent" in t and "⬣" in t for t in labels)
    finally:
        ctx.close()


def test_login_is_rate_limited_on_the_real_server(tmp_path: Path, browser: Browser) -> None:
    with mosquitto() as broker, dashboard_hub(tmp_path / "hub", broker.url) as own:
        own.add_user("target-1", "dsl")
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            page.goto(own.url + "/login")
            for _ in range(5):
                browser_login(page, own, "target-1", "not the password at all")
                page.wait_for_selector(".error")
                assert "do not match" in page.inner_text(".error")
            # The right password now waits too: the account is locked for a while.
            response_status: list[int] = []
            page.on("response", lambda r: response_status.append(r.status))
            browser_login(page, own, "target-1", PASSWORD)
            page.wait_for_selector(".error")
            assert "Too many failed attempts" in page.inner_text(".error")
            assert 429 in response_status
            page.screenshot(path=tmp_path / "rate-limited.png")
            assert "/login" in page.url
        finally:
            ctx.close()
    # SIGTERM stops the dashboard with the rest of the hub, cleanly.
    assert own.proc.returncode == 0
    log = own.log.read_text()
    assert "rate limited" in log
    assert "Shutting down" in log and "hedgerow-hub stopped" in log


def test_an_alert_can_be_acknowledged_with_the_keyboard_alone(
    hub: DashboardHub, context: BrowserContext
) -> None:
    alert_id = hub.add_alert(4, "y8", device="lt-keys")
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/alerts/{alert_id}")
    for _ in range(40):  # Tab through the page to the note, as a keyboard user would
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "note":
            break
    else:
        raise AssertionError("the note field cannot be reached with Tab")
    page.keyboard.type("Checked by keyboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Acknowledge"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{hub.url}/alerts/{alert_id}#trail")
    page.wait_for_function("document.getElementById('status').textContent === 'acknowledged'")
    assert "Checked by keyboard" in page.inner_text("#trail")


def test_a_bad_filter_is_a_page_not_a_traceback(hub: DashboardHub, context: BrowserContext) -> None:
    page = logged_in(context, hub, "dsl-1")
    response = page.goto(f"{hub.url}/alerts?severity=9")
    assert response is not None and response.status == 400
    assert "cannot show" in page.inner_text("main")
    response = page.goto(f"{hub.url}/alerts?status=gone")
    assert response is not None and response.status == 400
    assert "status must be one of" in page.inner_text("main")
