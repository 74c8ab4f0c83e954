"""The devices pages on a real `hedgerow-hub serve` (real Mosquitto, real Chromium): who may
see them, the list and a device's page showing what its reports said (and no pupil activity),
the off-site chart's table holding the hours written in, a technician making a token in the
browser that a device then enrols with over MQTT, revoking that device (database and broker
account), tokens through the API, and the access log of each action."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from agent.enrolment_client import enroll_online
from common.enrolment import EnrollToken
from hub.config import load_config
from hub.enroll.settings import load_enroll_settings
from hub.enroll.tokens import TokenRefused, find_token
from hub.model import DeviceInfo
from hub.store.devices import add_device, get_device
from hub.store.reports import NewReport, insert_reports
from tests.services import Mosquitto, mosquitto
from tests.web_support import (
    SITE,
    Answer,
    DashboardHub,
    dashboard_hub,
    http,
    logged_in,
    login_cookie,
)

DAY = 86_400_000
ROLES = ("dsl", "dsl_limited", "coordinator", "technician", "governor", "admin")


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    """One Mosquitto for this module's hub and the enrolling device."""
    with mosquitto() as b:
        yield b


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[DashboardHub]:
    """A real hub with an account of each role."""
    root = tmp_path_factory.mktemp("devices") / "hub"
    with dashboard_hub(root, broker.url) as running:
        for role in ROLES:
            groups = ("pupils",) if role == "dsl_limited" else ()
            running.add_user(f"{role.replace('_', '-')}-1", role, *groups)
        yield running


@pytest.fixture(scope="module")
def cookies(hub: DashboardHub) -> dict[str, str]:
    """A logged-in session per role."""
    return {role: login_cookie(hub, f"{role.replace('_', '-')}-1") for role in ROLES}


def _today_ms() -> int:
    now = int(time.time() * 1000)
    return now - now % DAY


def _laptop(hub: DashboardHub, device: str, group: str = "pupils") -> None:
    db = hub.db()
    try:
        add_device(
            db,
            DeviceInfo(
                site=SITE,
                device=device,
                device_class="pupil-laptop",
                group=group,
                verify_key=bytes(32),
                enrolled_ms=_today_ms() - 40 * DAY,
                last_seen_ms=_today_ms() + 60_000,
                hostname=f"{device}-host",
            ),
        )
    finally:
        db.close()


def _reports(
    hub: DashboardHub, device: str, docs: list[tuple[str, int, dict[str, object]]]
) -> None:
    """Write (kind, time, body) reports of a device through the hub's own store."""
    db = hub.db()
    try:
        with db.transaction():
            first = int(
                db.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM reports WHERE site = ? AND device = ?",
                    (SITE, device),
                )[0][0]
            )
            insert_reports(
                db,
                [
                    NewReport(
                        site=SITE,
                        device=device,
                        seq=first + n,
                        kind=kind,
                        digest=bytes([n]) * 32,
                        time_ms=at,
                        received_ms=at,
                        client_ip="10.0.0.7",
                        client_user="pupil-17",
                        body=json.dumps(body, separators=(",", ":"), sort_keys=True),
                    )
                    for n, (kind, at, body) in enumerate(docs, 1)
                ],
            )
    finally:
        db.close()


def _access(hub: DashboardHub, what: str) -> list[tuple[str, str, str]]:
    db = hub.db()
    try:
        rows = db.execute(
            "SELECT username, item, via FROM access_log WHERE what = ? ORDER BY id", (what,)
        )
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
    finally:
        db.close()


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/devices", {"dsl", "coordinator", "technician", "admin"}),
        ("/api/devices", {"dsl", "coordinator", "technician", "admin"}),
        ("/devices/school/lt-roles", {"dsl", "coordinator", "technician", "admin"}),
        ("/api/devices/school/lt-roles", {"dsl", "coordinator", "technician", "admin"}),
        ("/devices/tokens", {"technician", "admin"}),
        ("/api/devices/tokens", {"technician", "admin"}),
    ],
)
def test_each_role_sees_what_it_may(
    hub: DashboardHub, cookies: dict[str, str], path: str, allowed: set[str]
) -> None:
    if get_device_row(hub, "lt-roles") is None:
        _laptop(hub, "lt-roles")
    for role in ROLES:
        answer = http(hub, "GET", path, cookie=cookies[role])
        assert answer.status == (200 if role in allowed else 403), (role, path, answer.status)
    assert http(hub, "GET", path).status == (401 if path.startswith("/api/") else 303)


def get_device_row(hub: DashboardHub, device: str) -> DeviceInfo | None:
    """The device's row, or None."""
    db = hub.db()
    try:
        return get_device(db, SITE, device)
    finally:
        db.close()


def test_the_list_and_the_page_show_what_the_reports_said_and_no_activity(
    hub: DashboardHub, cookies: dict[str, str], context: BrowserContext, tmp_path: Path
) -> None:
    _laptop(hub, "lt-state")
    today = _today_ms()
    _reports(
        hub,
        "lt-state",
        [
            (
                "heartbeat",
                today + 60_000,
                {
                    "v": 1,
                    "uptime_s": 100,
                    "policy_version": 3,
                    "software": "hedgerow-agent 9.8.7",
                    "spool_depth": 42,
                    "site_state": "on_site",
                    "health": ["sniffer: no capture permission"],
                },
            ),
            (
                "event",
                today + 120_000,
                {
                    "v": 1,
                    "type": "site_state",
                    "at": today + 120_000,
                    "detail": {"state": "off_site", "previous": "on_site"},
                },
            ),
            (
                "summary",
                today + 180_000,
                {
                    "v": 1,
                    "source": "agent",
                    "client": {"ip": "10.0.0.7", "group": "pupils", "user": "pupil-17"},
                    "blocked": [
                        {"name": "secret-blocked.example", "category": "adult", "count": 1}
                    ],
                    "site": {"state": "off_site", "off_site_s": 60},
                },
            ),
        ],
    )
    listed = http(hub, "GET", "/api/devices?site=school", cookie=cookies["technician"]).json()
    assert isinstance(listed, dict)
    row = next(d for d in listed["devices"] if d["device"] == "lt-state")
    assert row["site_state"] == "off_site"  # the event came after the heartbeat
    assert row["policy_version"] == 3 and row["software"] == "hedgerow-agent 9.8.7"
    assert row["spool_depth"] == 42 and row["health"] == "problems"
    assert row["problems"] == ["sniffer: no capture permission"]
    assert row["revoked_ms"] is None and row["group"] == "pupils"

    page = logged_in(context, hub, "technician-1")
    page.click("nav >> text=Devices")
    page.wait_for_url(hub.url + "/devices")
    page.goto(hub.url + "/devices?site=school")  # another test may fill a page with its own
    cells = page.locator("table.devices tr", has_text="lt-state").inner_text()
    for expected in ("pupil-laptop", "pupils", "Off site", "hedgerow-agent 9.8.7", "42"):
        assert expected in cells, (expected, cells)
    assert "Problems: sniffer: no capture permission" in cells and "Active" in cells
    page.screenshot(path=str(tmp_path / "devices.png"), full_page=True)
    page.click("text=lt-state")
    page.wait_for_url(hub.url + "/devices/school/lt-state")
    page.screenshot(path=str(tmp_path / "device.png"), full_page=True)
    for p in (page.content(), http(hub, "GET", "/api/devices/school/lt-state",
                                   cookie=cookies["technician"]).body):  # fmt: skip
        assert "pupil-17" not in p and "secret-blocked.example" not in p and "10.0.0.7" not in p
    # Each view of one device is in the access log, page and API alike.
    views = [v for v in _access(hub, "device") if v[1] == "school/lt-state"]
    assert ("technician-1", "school/lt-state", "page") in views
    assert ("technician-1", "school/lt-state", "api") in views


def test_the_offsite_chart_table_holds_the_hours_written_in(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    _laptop(hub, "lt-away")
    today = _today_ms()
    two_ago = today - 2 * DAY

    def summary(off: int, on: int) -> dict[str, object]:
        return {
            "v": 1,
            "source": "agent",
            "client": {"ip": "10.0.0.9", "group": "pupils"},
            "blocked": [],
            "site": {"off_site_s": off, "on_site_s": on},
        }

    _reports(
        hub,
        "lt-away",
        [
            ("summary", today + 60_000, summary(1800, 0)),
            ("summary", today + 120_000, summary(3600, 0)),
            ("summary", two_ago + 60_000, summary(7200, 3600)),
            ("summary", today - 40 * DAY, summary(36_000, 0)),  # outside the 30 days
        ],
    )
    page = logged_in(context, hub, "coordinator-1")
    page.goto(hub.url + "/devices/school/lt-away")
    table = page.locator("figure.chart table.chart-data")
    assert [h.inner_text() for h in table.locator("thead th").all()][1:] == [
        "Off site (hours)",
        "On site (hours)",
    ]
    rows = {
        r.locator("th").inner_text(): [c.inner_text() for c in r.locator("td").all()]
        for r in table.locator("tbody tr").all()
    }
    assert len(rows) == 30

    def day(ms: int) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))

    assert rows[day(today)] == ["1.5", "0"]
    assert rows[day(two_ago)] == ["2", "1"]
    assert rows[day(today - DAY)] == ["0", "0"]
    assert sum(float(v[0]) for v in rows.values()) == 3.5
    assert "3 summaries in these 30 days" in page.inner_text("main")
    api = page.request.get(hub.url + "/api/devices/school/lt-away").json()
    by_day = {d["day"]: (d["off_site_h"], d["on_site_h"], d["summaries"]) for d in api["site_days"]}
    assert by_day[day(today)] == (1.5, 0, 2) and by_day[day(two_ago)] == (2, 1, 1)
    assert page.locator("figure.chart svg title").first.text_content() == (
        "Hours off site and on site per day, last 30 days"
    )
    # The coordinator sees devices but may not revoke them: no form.
    assert page.locator("text=Revoke this device").count() == 0
    page.screenshot(path=str(tmp_path / "offsite.png"), full_page=True)


def test_a_technician_makes_a_token_a_device_enrols_with_it_then_revokes_it(
    hub: DashboardHub, broker: Mosquitto, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, hub, "technician-1")
    page.goto(hub.url + "/devices")
    page.click("text=Enrolment tokens")
    page.wait_for_url(hub.url + "/devices/tokens")
    page.select_option("#device_class", "pupil-laptop")
    page.select_option("#group", "pupils")
    page.click("text=Make the token")
    token_text = page.inner_text("#new-token").strip()
    token = EnrollToken.parse(token_text)
    assert f"--token {token_text}" in page.inner_text("#enrol-command")
    page.screenshot(path=str(tmp_path / "token.png"), full_page=True)
    row = page.locator("table.tokens tr", has_text=token.token_id)
    assert "Usable" in row.inner_text() and "pupils" in row.inner_text()

    db = hub.db()
    try:  # stored hashed, never in plain text
        stored = db.execute("SELECT * FROM enroll_tokens WHERE token_id = ?", (token.token_id,))
        assert stored and token_text not in repr(stored) and token.canonical not in repr(stored)
        grant = find_token(db, token_text, site=SITE, now_ms=int(time.time() * 1000))
        assert grant.group == "pupils" and grant.uses_left == 1
    finally:
        db.close()
    # Shown once: the list never shows it again.
    page.goto(hub.url + "/devices/tokens")
    assert token_text not in page.content()
    assert ("technician-1", token.token_id, "page") in _access(hub, "enrolment token created")

    # A laptop enrols with it against the running hub, over the real broker.
    identity = enroll_online(
        tmp_path / "laptop",
        token=token_text,
        site=SITE,
        device_class="pupil-laptop",
        broker_url=broker.url,
        timeout_s=60,
    )
    info = get_device_row(hub, identity.device)
    assert info is not None and info.group == "pupils" and info.revoked_ms is None
    page.goto(hub.url + "/devices/tokens")
    assert "Used up" in page.locator("table.tokens tr", has_text=token.token_id).inner_text()

    passwd = load_enroll_settings(load_config(hub.config)).broker_dir / "passwd"
    db = hub.db()
    try:
        user = str(
            db.execute("SELECT mqtt_user FROM devices WHERE device = ?", (identity.device,))[0][0]
        )
    finally:
        db.close()
    assert re.search(rf"^{re.escape(user)}:", passwd.read_text(), re.M)

    page.goto(hub.url + f"/devices/{SITE}/{identity.device}")
    page.click(f"text=Revoke {identity.device}")
    page.wait_for_url(re.compile(r".*done=revoked$"))
    assert "The device is revoked" in page.inner_text("main")
    assert "Revoked" in page.inner_text("dl.facts")
    revoked = get_device_row(hub, identity.device)
    assert revoked is not None and revoked.revoked_ms is not None
    assert not re.search(rf"^{re.escape(user)}:", passwd.read_text(), re.M)
    entry = ("technician-1", f"{SITE}/{identity.device}", "page")
    assert entry in _access(hub, "device revoked")


def test_tokens_through_the_api_and_refusals(hub: DashboardHub, cookies: dict[str, str]) -> None:
    tech = cookies["technician"]
    assert http(hub, "POST", "/api/devices/tokens", cookie=tech).status == 422  # no body
    answer = _post_json(hub, "/api/devices/tokens", tech, {"class": "sinkhole", "uses": 2})
    assert answer.status == 200, answer.body
    body = answer.json()
    assert isinstance(body, dict) and body["uses"] == 2 and "hedgerow-dns enroll" in body["command"]
    listed = http(hub, "GET", "/api/devices/tokens", cookie=tech).json()
    assert isinstance(listed, dict)
    mine = next(t for t in listed["tokens"] if t["token_id"] == body["token_id"])
    assert mine["state"] == "usable" and mine["uses_left"] == 2 and "token" not in mine
    assert body["token"] not in json.dumps(listed)

    refused = _post_json(hub, "/api/devices/tokens", tech, {"class": "toaster"})
    assert refused.status == 422 and "class" in refused.body
    refused = _post_json(hub, "/api/devices/tokens", tech, {"class": "sinkhole", "group": "nope"})
    assert refused.status == 422 and "not defined" in refused.body

    gone = _post_json(hub, "/api/devices/tokens/revoke", tech, {"token_id": body["token_id"]})
    after = gone.json()
    assert gone.status == 200 and isinstance(after, dict)
    assert after["state"] == "revoked" and after["revoked_ms"] is not None
    assert after["token_id"] == mine["token_id"]
    db = hub.db()
    try:
        with pytest.raises(TokenRefused) as why:
            find_token(db, body["token"], site=SITE, now_ms=int(time.time() * 1000))
        assert why.value.reason == "revoked"
    finally:
        db.close()
    assert ("technician-1", body["token_id"], "api") in _access(hub, "enrolment token revoked")

    # Roles without devices.manage, and forms without the session's CSRF token, are refused.
    for role in ("dsl", "coordinator", "governor"):
        assert (
            _post_json(hub, "/api/devices/tokens", cookies[role], {"class": "sinkhole"}).status
            == 403
        )
    _laptop(hub, "lt-keep")
    assert _post_json(hub, "/api/devices/school/lt-keep/revoke", cookies["dsl"], {}).status == 403
    assert (
        _post_json(hub, "/api/devices/school/lt-keep/revoke", cookies["governor"], {}).status == 403
    )
    no_csrf = http(hub, "POST", "/devices/school/lt-keep/revoke", cookie=tech, form={"csrf": "x"})
    assert no_csrf.status == 403
    assert http(hub, "POST", "/devices/tokens", cookie=tech, form={
        "device_class": "sinkhole"}).status == 403  # fmt: skip
    kept = get_device_row(hub, "lt-keep")
    assert kept is not None and kept.revoked_ms is None
    # Revoking through the API, as `hedgerow-hub revoke` does; an unknown device is 404.
    done = _post_json(hub, "/api/devices/school/lt-keep/revoke", tech, {})
    assert done.status == 200 and done.json() == {
        "revoked": True, "changed": True, "broker_rewritten": True, "policy_removed": True,
        "message": "school/lt-keep revoked; its broker account and retained policy are removed",
    }  # fmt: skip
    again = _post_json(hub, "/api/devices/school/lt-keep/revoke", tech, {}).json()
    assert isinstance(again, dict) and again["changed"] is False
    assert _post_json(hub, "/api/devices/school/nothing/revoke", tech, {}).status == 404
    assert http(hub, "GET", "/devices/school/nothing", cookie=tech).status == 404


def _post_json(hub: DashboardHub, path: str, cookie: str, body: dict[str, object]) -> Answer:
    """A JSON POST over a real socket, as a script with a session would send it."""
    conn = HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Cookie": cookie, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, got, response.read().decode())
    finally:
        conn.close()


def _sinkhole(hub: DashboardHub) -> None:
    """The DNS filter dns-hall with a heartbeat saying its filter is off (once per module)."""
    if get_device_row(hub, "dns-hall") is not None:
        return
    db = hub.db()
    try:
        add_device(db, DeviceInfo(SITE, "dns-hall", "sinkhole", None, bytes(32), _today_ms()))
    finally:
        db.close()
    _reports(hub, "dns-hall", [("heartbeat", _today_ms() + 1000, {
        "v": 1, "uptime_s": 5, "policy_version": 0, "software": "hedgerow-dns 1.2.3",
        "filter_active": False})])  # fmt: skip


def test_a_dns_filter_is_on_site_and_has_no_offsite_chart(
    hub: DashboardHub, cookies: dict[str, str]
) -> None:
    _sinkhole(hub)
    page = http(hub, "GET", "/devices/school/dns-hall", cookie=cookies["technician"]).body
    assert "On site (where it is installed)" in page and "no off-site use is counted" in page
    assert "hedgerow-dns 1.2.3" in page and "Problems: filter: off" in page
    assert "chart-data" not in page
    api = http(hub, "GET", "/api/devices/school/dns-hall", cookie=cookies["technician"]).json()
    assert isinstance(api, dict) and api["site_days"] == [] and api["site_state"] is None


def test_the_list_pages_by_site(hub: DashboardHub, cookies: dict[str, str]) -> None:
    db = hub.db()
    try:
        with db.transaction():
            for n in range(101):
                add_device(db, DeviceInfo("paging", f"dev-{n:03d}", "pupil-laptop", "pupils",
                                          bytes([n]) * 32, _today_ms()))  # fmt: skip
    finally:
        db.close()
    first = http(hub, "GET", "/api/devices?site=paging", cookie=cookies["dsl"]).json()
    assert isinstance(first, dict) and len(first["devices"]) == 100
    assert first["next_cursor"] == "paging/dev-099"
    rest = http(
        hub, "GET", f"/api/devices?site=paging&cursor={first['next_cursor']}", cookie=cookies["dsl"]
    ).json()
    assert isinstance(rest, dict) and [d["device"] for d in rest["devices"]] == ["dev-100"]
    assert rest["next_cursor"] is None
    page = http(hub, "GET", "/devices?site=paging", cookie=cookies["dsl"]).body
    assert 'href="/devices?cursor=paging%2Fdev-099&amp;site=paging"' in page
    assert "Enrolment tokens" not in page  # the DSL sees devices, does not manage them
    assert http(hub, "GET", "/devices?cursor=nonsense", cookie=cookies["dsl"]).status == 400


AXE = Path(__file__).resolve().parent.parent / ".venv" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_problems(page: Page, where: str) -> list[str]:
    """axe-core (the npm release scripts/bootstrap.sh fetches) at WCAG 2.2 AA on the page."""
    assert AXE.is_file(), f"{AXE} is missing: run 'make bootstrap'"
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate("() => {\n" + AXE.read_text() + "\n}")
    result = page.evaluate(
        "opts => window.axe.run(document, opts)",
        {"runOnly": {"type": "tag", "values": WCAG_AA}, "resultTypes": ["violations"]},
    )
    return [
        f"{where}: {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
    ]


def test_the_devices_pages_pass_axe_and_fit_320_px(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    for device in ("lt-axe", "lt-axe-2"):
        if get_device_row(hub, device) is None:
            _laptop(hub, device)
    _sinkhole(hub)
    page = logged_in(context, hub, "technician-1")
    problems: list[str] = []
    for path in ("/devices", "/devices/school/lt-axe", "/devices/school/dns-hall",
                 "/devices/tokens", "/devices/school/missing"):  # fmt: skip
        page.goto(hub.url + path)
        problems += axe_problems(page, path)
    page.goto(hub.url + "/devices/tokens")
    page.click("text=Make the token")
    page.wait_for_selector("#new-token")
    problems += axe_problems(page, "new token")
    page.fill("#expires", "soon")
    page.click("text=Make the token")
    page.wait_for_selector("p.error")
    problems += axe_problems(page, "refused token")
    page.goto(hub.url + "/devices/school/lt-axe-2")
    page.click("text=Revoke lt-axe-2")
    page.wait_for_url(re.compile(r".*done=revoked$"))
    problems += axe_problems(page, "revoked")
    assert not problems, "\n".join(problems)
    # 320 px wide: the page itself never scrolls sideways (wide tables scroll in their box).
    page.set_viewport_size({"width": 320, "height": 640})
    for path in ("/devices", "/devices/school/lt-axe", "/devices/tokens"):
        page.goto(hub.url + path)
        page.screenshot(path=str(tmp_path / f"narrow-{path.replace('/', '_')}.png"))
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 320, (path, width)


def test_a_resent_token_form_makes_no_second_token(
    hub: DashboardHub, cookies: dict[str, str]
) -> None:
    """Reloading the page that showed a new token sends its form again: the second sending is
    refused (409) and no second token is made."""
    cookie = cookies["technician"]
    page = http(hub, "GET", "/devices/tokens", cookie=cookie)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.body)
    form_id = re.search(r'name="form_id" value="([^"]+)"', page.body)
    assert csrf is not None and form_id is not None
    form = {"csrf": csrf.group(1), "form_id": form_id.group(1), "site": SITE,
            "device_class": "pupil-laptop", "uses": "1", "expires": "1h"}  # fmt: skip

    def count() -> int:
        db = hub.db()
        try:
            return int(db.execute("SELECT COUNT(*) FROM enroll_tokens")[0][0])
        finally:
            db.close()

    before = count()
    assert http(hub, "POST", "/devices/tokens", cookie=cookie, form=form).status == 200
    again = http(hub, "POST", "/devices/tokens", cookie=cookie, form=form)
    assert again.status == 409 and "already sent" in again.body
    assert count() == before + 1
    # A fresh form (a new page) makes the next one.
    fresh = re.search(r'name="form_id" value="([^"]+)"', again.body)
    assert fresh is not None and fresh.group(1) != form_id.group(1)
    form["form_id"] = fresh.group(1)
    assert http(hub, "POST", "/devices/tokens", cookie=cookie, form=form).status == 200
    assert count() == before + 2
