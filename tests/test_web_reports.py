"""The weekly digest and the governors' annual review on a real `hedgerow-hub serve` in
Chromium: a governor reads the review, its CSV and signs it off, and no pupil, device, address
or alert summary appears anywhere in it; periods parse as documented."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext

from hub import alert_triage, alerts
from hub.reports import ReportError, academic_year, week_period
from tests.services import mosquitto
from tests.web_support import (
    SITE,
    DashboardHub,
    dashboard_hub,
    http,
    logged_in,
)

# What identifies an individual in the test data: none of it may reach a report.
PERSONAL = ("lt-042", "lt-043", "10.0.0.7", "pupil-17", "bad.example", "tried to open")


def test_weeks_and_academic_years() -> None:
    week = week_period("2026-W09", 0)
    assert week.label == "2026-W09"
    assert week.end_ms - week.start_ms == 7 * 86_400_000
    assert week_period(None, week.start_ms + 1000).label == "2026-W09"
    with pytest.raises(ReportError):
        week_period("2026-9", 0)
    with pytest.raises(ReportError):
        week_period("2026-W60", 0)
    year = academic_year(2025, 0)
    assert year.label == "2025-26"
    assert (year.first_day, year.last_day) == ("2025-09-01", "2026-08-31")
    assert (week.first_day, week.last_day) == ("2026-02-23", "2026-03-01")
    march_2026 = academic_year(None, 1_772_400_000_000)  # 2026-03-01
    assert march_2026.label == "2025-26"
    october_2026 = academic_year(None, 1_791_000_000_000)  # 2026-10-03
    assert october_2026.label == "2026-27"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHub]:
    """A real hub with a governor, a technician, two devices in group y7, alerts (one closed
    with an outcome after an acknowledgement) and blocked attempts."""
    root = tmp_path_factory.mktemp("reports") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        running.add_user("gov-1", "governor")
        running.add_user("tech-1", "technician")
        now = int(time.time() * 1000)
        db = running.db()
        try:
            for device in ("lt-042", "lt-043"):
                db.execute(
                    "INSERT INTO devices (site, device, class, grp, verify_key, hostname, "
                    "enrolled_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (SITE, device, "laptop", "y7", bytes(32), device, now - 1000, now),
                )
        finally:
            db.close()
        closed = running.add_alert(5, "y7")
        running.add_alert(3, "y7", device="lt-043")
        db = running.db()
        try:
            alerts.acknowledge(db, closed, now + 120_000, "dsl-1")
            alert_triage.close_with_outcome(
                db, closed, now + 240_000, "dsl-1", "early_help", "pupil-17 spoken to"
            )
            db.execute(
                "INSERT INTO attempts (report_id, site, device, client_ip, category, count, "
                "time_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (1, SITE, "lt-042", "10.0.0.7", "self-harm", 3, now),
            )
        finally:
            db.close()
        yield running


def _no_individual(text: str) -> None:
    for marker in PERSONAL:
        assert marker not in text, marker


def test_governor_generates_the_review_its_csv_and_signs_it(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, hub, "gov-1")
    page.click("nav >> text=Reports")
    page.click("text=Governors' annual review")
    assert "/reports/annual?year=" in page.url
    html = page.content()
    _no_individual(html)
    assert 'href="/static/print.css" media="print"' in html
    outcomes = page.inner_text("#table-outcomes")
    assert "Early help" in outcomes and "urgent" in outcomes
    assert "not closed (open)" in outcomes
    first = page.inner_text("#table-first_action")
    assert "urgent\t1\t2" in first  # acknowledged two minutes after it was raised
    blocked = page.inner_text("#table-blocked_by_group")
    assert "y7\tself-harm\t3" in blocked
    assert "laptop\ty7\t2" in page.inner_text("#table-devices")
    assert "governor\t1" in page.inner_text("#table-roles")
    assert "No filtering check recorded" in page.inner_text("#table-gaps")

    # On paper (the print stylesheet): the menus and forms are left out, the tables kept.
    page.screenshot(path=str(tmp_path / "annual.png"), full_page=True)
    page.emulate_media(media="print")
    assert page.locator("header.top").is_hidden()
    assert page.locator("form").first.is_hidden()
    assert page.locator("#table-outcomes").is_visible()
    page.screenshot(path=str(tmp_path / "annual-print.png"), full_page=True)
    page.emulate_media(media="screen")
    assert page.locator("header.top").is_visible()

    # Each table as CSV, the same numbers, nobody in it.
    link = page.locator("a", has_text="Alerts by severity and outcome as CSV")
    answer = page.request.get(hub.url + str(link.get_attribute("href")))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.text())))
    assert rows[0] == ["Severity", "Outcome", "Alerts"]
    assert ["urgent", "Early help", "1"] in rows
    for name in ("roles", "devices", "checks", "outcomes", "first_action", "gaps"):
        one = page.request.get(hub.url + f"/reports/annual/{name}.csv")
        assert one.status == 200, name
        _no_individual(one.text())
    assert page.request.get(hub.url + "/reports/annual/nothing.csv").status == 400
    # PDF only through the optional extra; without it the page says how to print to PDF.
    pdf = page.request.get(hub.url + "/reports/annual.pdf")
    if find_spec("weasyprint") is None:
        assert pdf.status == 400 and "print to PDF" in pdf.text()
        assert "Save as PDF" in page.inner_text("main")
    else:
        assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    review = page.request.get(hub.url + "/api/reports/annual").json()
    assert "outcomes" in review["tables"]
    _no_individual(str(review))

    # Sign-off: recorded with who and when, shown on the review.
    page.fill("#signed_as", "A. Patel, safeguarding governor")
    page.fill("#note", "Reviewed at the spring meeting")
    page.click("text=Sign the review")
    page.wait_for_url("**/reports/annual?year=*#sign-off")
    signed = page.inner_text("#sign-off")
    assert "A. Patel, safeguarding governor" in signed
    assert "Reviewed at the spring meeting" in signed


def test_weekly_digest_has_aggregates_only(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    page = logged_in(context, hub, "gov-1")
    page.goto(hub.url + "/reports")
    page.click("text=Weekly digest")
    assert "/reports/weekly?week=" in page.url
    html = page.content()
    _no_individual(html)
    page.screenshot(path=str(tmp_path / "weekly.png"), full_page=True)
    assert page.locator("figure").count() >= 1  # the blocked-by-category chart
    assert "self-harm" in page.inner_text("#table-blocked")
    assert "blocked-content" in page.inner_text("#table-alerts")
    page.goto(hub.url + "/reports/weekly?week=2026-W99")
    assert "does not exist" in page.inner_text("main")
    digest = page.request.get(hub.url + "/api/reports/weekly?week=2026-W09").json()
    assert digest["period"] == "2026-W09"


def test_only_report_roles_see_reports(hub: DashboardHub, context: BrowserContext) -> None:
    page = logged_in(context, hub, "tech-1")
    answer = page.request.get(hub.url + "/reports/annual")
    assert answer.status == 403
    assert page.request.get(hub.url + "/api/reports/annual").status == 403
    assert http(hub, "GET", "/api/reports/weekly").status == 401
