"""Filtering: its aggregates and policy log on SQLite and PostgreSQL, and on a real
`hedgerow-hub serve` in Chromium a governor reads charts whose tables hold the attempts written
in, the policy log, and no individual's data anywhere on the page or in its API."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from common.wire.signing import SigningKey
from hub.config import load_config
from hub.filtering import (
    Window,
    blocked_by_group,
    blocked_by_site,
    blocked_per_day,
    policy_log,
    top_names,
)
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.policy.publish import Decision, record_decision
from hub.policy.versions import signed_policy
from hub.reports import Period, annual
from hub.store import Database
from hub.store.devices import add_device
from hub.store.reports import BlockedEntry, NewReport, insert_reports
from tests.services import mosquitto
from tests.test_web_devices import axe_problems
from tests.web_support import (
    DashboardHub,
    browser_login,
    dashboard_hub,
    http,
    login_cookie,
)

DAY = 86_400_000
NOW = int(time.time() * 1000)
TODAY = NOW - NOW % DAY
# Who and where: none of these may appear on the filtering page or in its API.
INDIVIDUAL = ("pupil-17", "10.0.0.7", "10.0.0.8", "dns-hall", "lt-77", "dns-annex", "aa:bb:cc")
ROLES = ("dsl", "dsl_limited", "coordinator", "technician", "governor", "admin")


def _summary(
    site: str,
    device: str,
    seq: int,
    at: int,
    group: str,
    blocked: list[tuple[str, str, int]],
) -> NewReport:
    body = {
        "v": 1,
        "source": "dns",
        "client": {"ip": "10.0.0.7", "group": group, "user": "pupil-17", "mac": "aa:bb:cc"},
        "blocked": [{"name": n, "category": c, "count": k} for n, c, k in blocked],
    }
    categories: dict[str, int] = {}
    for _, category, count in blocked:
        categories[category] = categories.get(category, 0) + count
    return NewReport(
        site=site,
        device=device,
        seq=seq,
        kind="summary",
        digest=bytes([seq]) * 32,
        time_ms=at,
        received_ms=at,
        client_ip="10.0.0.7",
        client_user="pupil-17",
        body=json.dumps(body, separators=(",", ":"), sort_keys=True),
        blocked=tuple(BlockedEntry(n, c, k) for n, c, k in blocked),
        attempts=tuple(categories.items()),
        client_key="ip:10.0.0.7",
        client_group=group,  # as ingest stores it (hub/ingest/record.py)
    )


def _event(site: str, device: str, seq: int, at: int, name: str, category: str) -> NewReport:
    """A blocked event: its attempt is counted, its name is left to the summary's."""
    body = {"v": 1, "type": "blocked", "at": at, "category": category, "name": name,
            "client": {"ip": "10.0.0.8", "group": "pupils"}}  # fmt: skip
    return NewReport(
        site=site,
        device=device,
        seq=seq,
        kind="event",
        digest=bytes([seq]) * 32,
        time_ms=at,
        received_ms=at,
        client_ip="10.0.0.8",
        client_user=None,
        body=json.dumps(body, separators=(",", ":"), sort_keys=True),
        blocked=(BlockedEntry(name, category, 1),),
        attempts=((category, 1),),
        client_group="pupils",
    )


def write_activity(db: Database) -> None:
    """Devices at two sites and their blocked attempts (the numbers the tests look for):
    today pupils 5 adult + 2 gambling (+1 adult event), staff 1 malware, annex guests 3
    phishing; three days ago a pupils laptop 4 adult; 40 days ago 100 adult (outside)."""
    for site, device, device_class, group in (
        ("school", "dns-hall", "sinkhole", None),
        ("school", "lt-77", "pupil-laptop", "pupils"),
        ("annex", "dns-annex", "sinkhole", None),
    ):
        add_device(db, DeviceInfo(site, device, device_class, group, bytes(32), TODAY - 50 * DAY))
    insert_reports(
        db,
        [
            _summary("school", "dns-hall", 1, TODAY + 60_000, "pupils",
                     [("adult.example", "adult", 5), ("casino.example", "gambling", 2)]),
            _summary("school", "dns-hall", 2, TODAY + 120_000, "staff",
                     [("evil.example", "malware", 1)]),
            _event("school", "dns-hall", 3, TODAY + 130_000, "adult.example", "adult"),
            _summary("school", "lt-77", 1, TODAY - 3 * DAY + 60_000, "pupils",
                     [("adult.example", "adult", 4)]),
            _summary("school", "lt-77", 2, TODAY - 40 * DAY, "pupils",
                     [("old.example", "adult", 100)]),
            _summary("annex", "dns-annex", 1, TODAY + 60_000, "guests",
                     [("phish.example", "phishing", 3)]),
        ],
    )  # fmt: skip


def _site_doc(groups: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "site": "school",
        "default_group": "pupils",
        "groups": {g: {"block": b} for g, b in groups.items()},
        "beacon_keys": [],
        "reporting": {"summary_interval_s": 300},
    }


def _device_doc(allow: list[str]) -> dict[str, Any]:
    return {
        **_site_doc({}),
        "device": "lt-77",
        "group": "pupils",
        "filter": {"lists": [], "blocked_answer": "null", "group": {"allow": allow}},
    }


def write_policies(db: Database, sign: SigningKey, start_ms: int) -> None:
    """Two site policy versions (gambling added for pupils) and two of a pupil laptop's
    (example.org allowed)."""
    signed_policy(
        db,
        site="school",
        device="",
        signer=sign,
        now_ms=start_ms,
        document=_site_doc({"pupils": ["adult"], "staff": ["malware"]}),
    )
    signed_policy(
        db,
        site="school",
        device="lt-77",
        signer=sign,
        now_ms=start_ms + 1000,
        document=_device_doc(["bbc.co.uk"]),
    )
    signed_policy(
        db,
        site="school",
        device="",
        signer=sign,
        now_ms=start_ms + 2000,
        document=_site_doc({"pupils": ["adult", "gambling"], "staff": ["malware"]}),
    )
    signed_policy(db, site="school", device="lt-77", signer=sign, now_ms=start_ms + 3000,
                  document=_device_doc(["bbc.co.uk", "example.org"]))  # fmt: skip


def test_the_aggregates_add_up(db: Database) -> None:
    write_activity(db)
    w = Window.last(30, NOW)
    labels, per_day = blocked_per_day(db, w)
    assert len(labels) == 30 and labels[-1] == time.strftime("%Y-%m-%d", time.gmtime(NOW / 1000))
    assert per_day["adult"][-1] == 6 and per_day["adult"][-4] == 4 and sum(per_day["adult"]) == 10
    assert per_day["gambling"][-1] == 2 and list(per_day) == ["adult", "phishing", "gambling",
                                                             "malware"]  # fmt: skip
    # The group is the client's (every group comes through one DNS filter), not the device's.
    assert blocked_by_group(db, w).rows == (("pupils", 12), ("guests", 3), ("staff", 1))
    assert blocked_by_site(db, w).rows == (("school", 13), ("annex", 3))
    # Names from summaries only: the event's lookup is in its summary already.
    assert top_names(db, w).rows == (
        ("adult.example", "adult", 9),
        ("phish.example", "phishing", 3),
        ("casino.example", "gambling", 2),
        ("evil.example", "malware", 1),
    )
    assert blocked_by_site(db, Window.last(1, NOW - 10 * DAY)).rows == ()
    # The governors' review counts by the same group: the client's, not the DNS filter's.
    review = {t.name: t for t in annual(db, Period("window", w.start_ms, w.end_ms), NOW)}
    per_group: dict[str, int] = {}
    for group, _category, count in review["blocked_by_group"].rows:
        per_group[str(group)] = per_group.get(str(group), 0) + int(count)
    assert per_group == {"pupils": 12, "guests": 3, "staff": 1}


def test_the_policy_log_says_what_each_version_changed(db: Database) -> None:
    write_activity(db)
    write_policies(db, SigningKey.generate(), NOW - 10_000)
    log = policy_log(db)
    assert [c.changes for c in log] == [
        ("group pupils: now allows example.org",),
        ("group pupils: now blocks gambling",),
        ("group pupils: allows bbc.co.uk",),
        ("default group pupils", "group pupils: blocks adult", "group staff: blocks malware"),
    ]
    assert [c.at_ms for c in log] == [NOW - 7000, NOW - 8000, NOW - 9000, NOW - 10_000]
    assert log[0].to_json()["decided_by"] is None  # nothing recorded who
    # `policy publish --by ms.jones --reason ...` signed the gambling change.
    assert record_decision(db, Decision("ms.jones", "ticket 42: gambling for pupils"), NOW - 8000)
    assert not record_decision(db, Decision("nobody"), NOW - 1)  # signed nothing: not kept
    log = policy_log(db)
    assert (log[1].decided_by, log[1].reason) == ("ms.jones", "ticket 42: gambling for pupils")
    assert log[1].to_json()["decided_by"] == "ms.jones" and log[0].decided_by is None


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHub]:
    """A real hub with an account of each role, the activity above and policy changes."""
    root = tmp_path_factory.mktemp("filtering") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        for role in ROLES:
            groups = ("pupils",) if role == "dsl_limited" else ()
            running.add_user(f"{role.replace('_', '-')}-1", role, *groups)
        database = running.db()
        try:
            write_activity(database)
            keys = HubKeys(load_config(running.config).keys_dir)
            write_policies(database, keys.signing, NOW)
        finally:
            database.close()
        yield running


def _rows(page: Page, selector: str) -> dict[str, list[str]]:
    table = page.locator(f"{selector} table, table{selector}").first
    return {
        r.locator("th").inner_text(): [c.inner_text() for c in r.locator("td").all()]
        for r in table.locator("tbody tr").all()
    }


def test_a_governor_reads_the_charts_tables_and_the_policy_log(
    hub: DashboardHub, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(hub.url + "/")
        browser_login(page, hub, "governor-1")
        page.wait_for_url(hub.url + "/")
        page.click("nav >> text=Filtering")
        page.wait_for_url(hub.url + "/filtering")
        page.screenshot(path=str(tmp_path / "filtering.png"), full_page=True)
        assert _rows(page, "#table-by-group") == {
            "pupils": ["12"], "guests": ["3"], "staff": ["1"]
        }  # fmt: skip
        assert _rows(page, "#table-by-site") == {"school": ["13"], "annex": ["3"]}
        per_day = page.locator("#table-per-day table")
        heads = [h.inner_text() for h in per_day.locator("thead th").all()]
        assert heads == ["When", "adult (attempts)", "phishing (attempts)",
                         "gambling (attempts)", "malware (attempts)"]  # fmt: skip
        days = _rows(page, "#table-per-day")
        today = time.strftime("%Y-%m-%d", time.gmtime(NOW / 1000))
        three_ago = time.strftime("%Y-%m-%d", time.gmtime((NOW - 3 * DAY) / 1000))
        assert len(days) == 30 and days[today] == ["6", "3", "2", "1"]
        assert days[three_ago] == ["4", "0", "0", "0"]
        names = _rows(page, "#table-top_names")
        assert names["adult.example"] == ["adult", "9"] and "old.example" not in names
        log = page.inner_text("#table-policy-log")
        assert "group pupils: now blocks gambling" in log
        assert "group pupils: now allows example.org" in log and "not recorded" in log
        assert "policy publish --by NAME" in page.inner_text(".who-decided")
        assert "pupils" in page.inner_text("#table-policy-now")
        # No individual: no user, address, MAC or device id, on the page or in its API.
        texts = [
            page.content(),
            page.request.get(hub.url + "/api/filtering").text(),
            page.request.get(hub.url + "/api/filtering/policy").text(),
        ]
        for text in texts:
            for individual in INDIVIDUAL:
                assert individual not in text, individual
        api = page.request.get(hub.url + "/api/filtering?days=7").json()
        assert api["tables"]["by_group"]["rows"] == [["pupils", 12], ["guests", 3], ["staff", 1]]
        assert api["per_day"]["categories"]["adult"][-1] == 6 and len(api["per_day"]["days"]) == 7
        # Governors may not see the devices themselves.
        assert page.request.get(hub.url + "/devices").status == 403
        assert page.request.get(hub.url + "/api/devices").status == 403
    finally:
        context.close()


def test_who_may_see_filtering(hub: DashboardHub) -> None:
    allowed = {"dsl", "coordinator", "governor", "admin"}
    for role in ROLES:
        cookie = login_cookie(hub, f"{role.replace('_', '-')}-1")
        for path in ("/filtering", "/api/filtering", "/api/filtering/policy"):
            answer = http(hub, "GET", path, cookie=cookie)
            assert answer.status == (200 if role in allowed else 403), (role, path)
    assert http(hub, "GET", "/api/filtering").status == 401
    assert http(hub, "GET", "/filtering").status == 303
    assert http(hub, "GET", "/filtering?days=0", cookie=login_cookie(hub, "dsl-1")).status == 400


def test_the_filtering_page_passes_axe_and_fits_320_px(
    hub: DashboardHub, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(hub.url + "/")
        browser_login(page, hub, "governor-1")
        page.wait_for_url(hub.url + "/")
        page.goto(hub.url + "/filtering")
        problems = axe_problems(page, "/filtering")
        page.goto(hub.url + "/filtering?days=1")
        problems += axe_problems(page, "/filtering?days=1")
        assert not problems, "\n".join(problems)
        page.set_viewport_size({"width": 320, "height": 640})
        page.goto(hub.url + "/filtering")
        page.screenshot(path=str(tmp_path / "narrow.png"))
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 320
    finally:
        context.close()
