"""The checks register: its store on SQLite and PostgreSQL, and on a real `hedgerow-hub serve`
in Chromium a technician records a manual check that appears in the register and the
governors' review, a selftest run is recorded through the API, a governor may not record."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext

from hub.checks import CheckError, add_check, read_checks, selftest_check
from hub.store import Database
from tests.services import mosquitto
from tests.web_support import DashboardHub, dashboard_hub, http, logged_in


def test_checks_are_appended_and_read_newest_first(db: Database) -> None:
    first = add_check(
        db,
        at_ms=1000,
        recorded_ms=2000,
        recorded_by="tess",
        kind="manual",
        what="SWGfL Test Filtering on a Year 7 laptop",
        result="pass",
        action="",
    )
    second = add_check(
        db,
        at_ms=5000,
        recorded_ms=6000,
        recorded_by="tess",
        kind="selftest",
        what="selftest",
        result="partial",
        action="asked the supplier",
        passed=3,
        failed=1,
    )
    got = read_checks(db)
    assert [c.id for c in got] == [second, first]
    assert got[0].passed == 3 and got[0].failed == 1 and got[1].passed is None
    assert [c.id for c in read_checks(db, 0, 5000)] == [first]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("result", "maybe", "result"),
        ("kind", "guess", "kind"),
        ("what", "  ", "what was checked"),
        ("at_ms", 10**15, "future"),
    ],
)
def test_a_bad_check_is_refused(db: Database, field: str, value: object, message: str) -> None:
    values: dict[str, object] = {
        "at_ms": 1000,
        "recorded_ms": 1000,
        "recorded_by": "tess",
        "kind": "manual",
        "what": "x",
        "result": "pass",
        "action": "",
    }
    values[field] = value
    with pytest.raises(CheckError, match=message):
        add_check(db, **values)  # type: ignore[arg-type]
    assert read_checks(db) == []


def test_selftest_summary_gives_the_result() -> None:
    ok = {"server": "127.0.0.1:53", "passed": 4, "failed": 0, "not_testable": []}
    assert selftest_check(ok)[1:] == ("pass", 4, 0)
    assert selftest_check({**ok, "failed": 1})[1] == "partial"
    assert selftest_check({**ok, "passed": 0, "failed": 2})[1] == "fail"
    untested = selftest_check({**ok, "not_testable": ["staff"]})
    assert untested[1] == "partial" and "staff" in untested[0]
    with pytest.raises(CheckError):
        selftest_check({"passed": "x"})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHub]:
    """A real hub with a technician and a governor."""
    root = tmp_path_factory.mktemp("checks") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        running.add_user("tech-1", "technician")
        running.add_user("gov-1", "governor")
        yield running


def test_a_technician_records_a_check_seen_in_register_and_review(
    hub: DashboardHub, context: BrowserContext, browser: Browser
) -> None:
    page = logged_in(context, hub, "tech-1")
    page.click("nav >> text=Checks")
    page.wait_for_url(hub.url + "/checks")
    page.fill("#what", "SWGfL Test Filtering from the ICT suite")
    page.select_option("#result", "fail")
    page.fill("#action", "Raised with the filtering supplier")
    page.click("text=Record the check")
    page.wait_for_url(hub.url + "/checks")
    row = page.locator("table.checks tbody tr").first
    assert "SWGfL Test Filtering from the ICT suite" in row.inner_text()
    assert "Failed" in row.inner_text() and "tech-1" in row.inner_text()
    assert "Raised with the filtering supplier" in row.inner_text()

    # A selftest run goes in through the JSON API with the same session.
    answer = page.request.post(
        hub.url + "/api/checks/selftest",
        data={
            "summary": {"server": "127.0.0.1:53", "passed": 6, "failed": 0, "not_testable": []},
            "groups": [],
        },
    )
    assert answer.status == 200, answer.text()
    assert answer.json()["result"] == "pass"
    listed = page.request.get(hub.url + "/api/checks").json()["checks"]
    assert [c["kind"] for c in listed] == ["selftest", "manual"]

    # An empty "what" is refused with the reason, and nothing is added.
    page.goto(hub.url + "/checks")
    page.eval_on_selector("#what", "e => e.removeAttribute('required')")
    page.click("text=Record the check")
    assert "Not recorded" in page.inner_text("main")
    assert page.locator("table.checks tbody tr").count() == 2

    gov = browser.new_context()
    try:
        review = logged_in(gov, hub, "gov-1")
        review.goto(hub.url + "/reports/annual")
        checks = review.inner_text("#table-checks")
        assert "SWGfL Test Filtering from the ICT suite" in checks
        assert "Raised with the filtering supplier" in checks
        assert "tech-1" not in review.inner_text("main")  # the review names no one
        # The governor sees the register but may not add to it.
        review.goto(hub.url + "/checks")
        assert review.locator("#what").count() == 0
        token = re.search(r'name="csrf" value="([^"]+)"', review.content())
        assert token is not None
        refused = review.request.post(
            hub.url + "/checks",
            form={"csrf": token.group(1), "day": "2026-01-05", "what": "x", "result": "pass"},
        )
        assert refused.status == 403
    finally:
        gov.close()


def test_nobody_logged_in_cannot_read_the_register(hub: DashboardHub) -> None:
    assert http(hub, "GET", "/api/checks").status == 401
    assert http(hub, "GET", "/checks").status == 303
