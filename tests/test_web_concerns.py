"""Concern records end to end: opened from two alerts in Chromium, amended (a new audited entry,
the old values kept), signed off, found in the pupil's and the device's chronology, exported;
never changed or deleted by any route or by retention; who may open and who may read; every
view in the access log; bad input a clear 4xx. Real `hedgerow-hub serve`, real sockets, the
store on SQLite and PostgreSQL. Screenshots are kept under tmp_path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from hub import alerts
from hub import concerns as store
from hub.model import Alert
from hub.store import Database
from hub.store.retention import Retention, purge
from tests.services import mosquitto
from tests.web_support import (
    SITE,
    DashboardHub,
    api_json,
    dashboard_hub,
    http,
    logged_in,
    login_cookie,
)

TABLES = {
    "concerns": "SELECT id, opened_ms, opened_by, grp FROM concerns WHERE id = ?",
    "concern_entries": (
        "SELECT id, concern_id, at_ms, actor, role, kind, reason FROM concern_entries "
        "WHERE concern_id = ? ORDER BY id"
    ),
    "concern_fields": (
        "SELECT entry_id, concern_id, field, value FROM concern_fields WHERE concern_id = ? "
        "ORDER BY entry_id, field"
    ),
    "concern_alerts": (
        "SELECT concern_id, alert_id, rule, severity, site, device, grp, summary, first_seen_ms "
        "FROM concern_alerts WHERE concern_id = ? ORDER BY alert_id"
    ),
}


def _rows(db: Database, concern_id: int) -> dict[str, list[tuple[object, ...]]]:
    """Every stored row of one concern, table by table."""
    return {
        name: [tuple(r) for r in db.execute(sql, (concern_id,))] for name, sql in TABLES.items()
    }


# -- the store --


def _alert(db: Database, at: int, key: str, group: str = "y7") -> Alert:
    return alerts.record(
        db,
        alerts.Finding(
            rule="blocked-content", severity=4, site=SITE, device="lt-9", device_class="laptop",
            group=group, key=key, summary=f"lt-9 was blocked ({key})", at_ms=at,
        ),
        alerts.AlertPolicy(),
    )  # fmt: skip


FIRST = {"pupil": "UPN-1", "category": "grooming", "seen": "Messages from an adult"}


def test_an_amendment_adds_rows_and_changes_none(db: Database) -> None:
    linked = [_alert(db, 1_000, "a"), _alert(db, 2_000, "b")]
    with db.transaction():
        concern_id = store.open_concern(
            db, at_ms=3_000, actor="dana", role="dsl", group="y7", values=FIRST, alerts=linked
        )
    before = _rows(db, concern_id)
    with db.transaction():
        store.amend(
            db, concern_id, at_ms=4_000, actor="lee", role="dsl_limited",
            values={**FIRST, "category": "online safety", "actions": "Told the DSL"},
            reason="The pupil explained",
        )  # fmt: skip
    with db.transaction():
        store.sign_off(db, concern_id, at_ms=5_000, actor="dana", role="dsl", note="Done")
    after = _rows(db, concern_id)
    for table, rows in before.items():
        assert after[table][: len(rows)] == rows, table  # nothing recorded has changed
    assert [r[5] for r in after["concern_entries"]] == ["opened", "amended", "signed-off"]
    amended_entry = after["concern_entries"][1][0]
    changed = sorted((r[2], r[3]) for r in after["concern_fields"] if r[0] == amended_entry)
    assert changed == [("actions", "Told the DSL"), ("category", "online safety")]  # only those
    concern = store.get_concern(db, concern_id)
    assert concern.current["category"] == "online safety" and concern.status == "signed off"
    assert dict(concern.entries[0].fields)["category"] == "grooming"  # the history keeps it


def test_retention_never_purges_a_concern(db: Database) -> None:
    linked = [_alert(db, 1_000, "a")]
    with db.transaction():
        concern_id = store.open_concern(
            db, at_ms=2_000, actor="dana", role="dsl", group="y7", values=FIRST, alerts=linked
        )
    before = _rows(db, concern_id)
    counts = purge(db, Retention(summaries_days=1, alerts_days=1), now_ms=10 * 86_400_000)
    assert counts.alerts == 1 and db.execute("SELECT COUNT(*) FROM alerts")[0][0] == 0
    assert _rows(db, concern_id) == before
    # The alert is gone from the alerts table; the concern's copy keeps it in the chronology.
    items = store.device_chronology(db, SITE, "lt-9", groups=None)
    assert [(i.kind, i.alert.alert_id if i.alert else None) for i in items] == [
        ("alert", linked[0].id), ("opened", None),
    ]  # fmt: skip


def test_no_statement_of_the_concern_store_updates_or_deletes() -> None:
    # Not the proof (the tests above and the HTTP verbs below are): a tripwire for a future edit.
    for module in ("hub/concerns.py", "hub/web/concerns.py"):
        text = Path(module).read_text()
        assert not re.search(r"\b(UPDATE|DELETE|REPLACE|TRUNCATE|DROP)\b", text), module


# -- the real server --

USERS = {
    "dsl-1": ("dsl",),
    "coordinator-1": ("coordinator",),
    "technician-1": ("technician",),
    "governor-1": ("governor",),
    "admin-1": ("admin",),
    "limited-7": ("dsl_limited", "y7"),
    "limited-8": ("dsl_limited", "y8"),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardHub]:
    """One running hub for this module's server tests, with an account per role."""
    root = tmp_path_factory.mktemp("concerns") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        for username, (role, *groups) in USERS.items():
            running.add_user(username, role, *groups)
        yield running


@pytest.fixture(scope="module")
def cookies(hub: DashboardHub) -> dict[str, str]:
    """A session per account, logged in through the real form."""
    return {username: login_cookie(hub, username) for username in USERS}


def _open(
    hub: DashboardHub, cookie: str, pupil: str, group: str = "y7", alert_ids: tuple[int, ...] = ()
) -> int:
    status, got = api_json(
        hub,
        "POST",
        "/api/concerns",
        cookie,
        {
            "fields": {"pupil": pupil, "category": "bullying or harassment", "seen": "Messages"},
            "group": group,
            "alerts": list(alert_ids),
        },
    )
    assert status == 201, got
    return int(str(got["id"]))


def _csrf(hub: DashboardHub, cookie: str, path: str) -> str:
    page = http(hub, "GET", path, cookie=cookie)
    assert page.status == 200, (page.status, page.body)
    found = re.search(r'name="csrf" value="([^"]+)"', page.body)
    assert found is not None
    return found.group(1)


def _submit(page: Page, button: str) -> None:
    with page.expect_navigation():
        page.click(button)


def test_open_from_two_alerts_amend_sign_off_chronology_and_export(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    first = hub.add_alert(4, "y7", device="lt-concern", name="one.example")
    second = hub.add_alert(5, "y7", device="lt-concern", name="two.example")
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/alerts/{second}")
    page.check(f"input[name=alert][value='{first}']")  # an earlier alert of the same device
    _submit(page, "#h-concern ~ form button")
    ticked = page.locator("input[name=alert]:checked").evaluate_all("es => es.map(e => e.value)")
    assert sorted(ticked) == sorted([str(first), str(second)])
    assert page.input_value("#c-group") == "y7"  # the alerts' group
    assert page.input_value("#c-happened")  # when the first alert began
    page.fill("#c-pupil", "UPN-A123")
    page.select_option("#c-category", "self-harm or suicide")
    page.fill("#c-seen", "Searches for ways to self-harm, twice in ten minutes")
    page.fill("#c-actions", "Spoke to the class teacher")
    page.fill("#c-decision", "Speak to the pupil today")
    page.fill("#c-reasons", "Two searches close together")
    page.check("input[name=parents_informed][value=no]")
    page.screenshot(path=tmp_path / "concern-form.png", full_page=True)
    _submit(page, "text=Record the concern")
    found = re.search(r"/concerns/(\d+)$", page.url)
    assert found is not None, page.url
    concern_id = int(found.group(1))
    linked = page.inner_text("#linked-alerts")
    assert f"Alert {first}" in linked and f"Alert {second}" in linked
    assert "self-harm or suicide" in page.inner_text("#current")
    assert page.inner_text("#status") == "open"

    page.click("text=Amend this concern")
    page.wait_for_url(f"{hub.url}/concerns/{concern_id}/amend")
    assert page.input_value("#c-pupil") == "UPN-A123"  # the form starts from the record
    page.select_option("#c-category", "mental health")
    page.fill("#c-seen", "Searches for ways to self-harm; the pupil says a friend asked")
    page.check("input[name=parents_informed][value=yes]")
    page.fill("#c-parents-at", "2026-03-02T09:15")
    page.fill("#c-reason", "Fuller account after speaking to the pupil")
    _submit(page, "text=Add the amendment")
    assert page.url == f"{hub.url}/concerns/{concern_id}"
    current = page.inner_text("#current")
    assert "mental health" in current and "2026-03-02T09:15" in current
    entries = page.locator("#entries > li").all_inner_texts()
    assert len(entries) == 2
    assert "opened by dsl-1 (dsl)" in entries[0] and "self-harm or suicide" in entries[0]
    assert "Searches for ways to self-harm, twice in ten minutes" in entries[0]  # kept
    assert "amended by dsl-1 (dsl)" in entries[1] and "mental health" in entries[1]
    assert "Reason: Fuller account after speaking to the pupil" in entries[1]
    assert "Pupil reference" not in entries[1]  # only what changed

    page.fill("#sign-note", "Plan agreed with the pupil and parents")
    _submit(page, "text=Sign off")
    assert page.inner_text("#status") == "signed off"
    assert "signed-off by dsl-1" in page.inner_text("#entries")
    page.screenshot(path=tmp_path / "concern.png", full_page=True)

    page.click("text=Chronology for pupil UPN-A123")
    page.wait_for_url(re.compile(r".*/chronology\?pupil=UPN-A123$"))
    rows = page.locator("#chronology tbody tr").all_inner_texts()
    kinds = [r.split("\t")[1] for r in rows]
    assert kinds.count("Alert") == 2
    assert "Concern opened" in kinds and "Concern amended" in kinds
    assert "Concern signed-off" in kinds
    amended = next(r for r in rows if "Concern amended" in r)
    assert "Fuller account" in amended and "Category" in amended
    page.screenshot(path=tmp_path / "chronology-pupil.png", full_page=True)
    page.goto(f"{hub.url}/concerns/{concern_id}")
    page.click("text=Chronology for device school/lt-concern")
    page.wait_for_url(re.compile(r".*/chronology\?device=school(%2F|/)lt-concern$"))
    device_rows = page.locator("#chronology tbody tr").all_inner_texts()
    device_kinds = [r.split("\t")[1] for r in device_rows]
    assert "Concern opened" in device_kinds and "Concern amended" in device_kinds
    assert device_kinds.count("Alert") == 2
    assert page.inner_text("h1") == "Chronology: device school/lt-concern"

    html = context.request.get(f"{hub.url}/concerns/{concern_id}/export")
    assert html.status == 200
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.headers["content-disposition"] == (
        f'attachment; filename="concern-{concern_id}.html"'
    )
    text = context.request.get(f"{hub.url}/concerns/{concern_id}/export?format=text")
    assert text.headers["content-type"].startswith("text/plain")
    assert "attachment" in text.headers["content-disposition"]
    both = (
        "UPN-A123",
        "Pupil reference",
        "mental health",  # the record as it stands
        "self-harm or suicide",  # and the entry that first said otherwise
        "Searches for ways to self-harm, twice in ten minutes",
        "Fuller account after speaking to the pupil",
        "Plan agreed with the pupil and parents",
        "Entry 1: opened by dsl-1 (dsl)",
        "Entry 2: amended by dsl-1 (dsl)",
        "Entry 3: signed-off by dsl-1 (dsl)",
        "Exported from Hedgerow by dsl-1",
    )
    assert f"<td>{first}</td>" in html.text() and f"<td>{second}</td>" in html.text()
    html_words = re.sub(r"<[^>]+>", "", html.text()).replace("&#39;", "'")
    for expected in (*both, f"Safeguarding concern record {concern_id}"):
        assert expected in html_words, expected
    for expected in (*both, f"SAFEGUARDING CONCERN RECORD {concern_id}", f"Alert {second}:"):
        assert expected in text.text(), expected
    (tmp_path / f"concern-{concern_id}.html").write_text(html.text())
    (tmp_path / f"concern-{concern_id}.txt").write_text(text.text())


def test_no_route_changes_or_deletes_a_concern(hub: DashboardHub, cookies: dict[str, str]) -> None:
    alert_id = hub.add_alert(3, "y7", device="lt-immutable")
    dsl = cookies["dsl-1"]
    concern_id = _open(hub, dsl, "UPN-IMM", alert_ids=(alert_id,))
    db = hub.db()
    try:
        before = _rows(db, concern_id)
    finally:
        db.close()
    paths = [
        f"/concerns/{concern_id}",
        f"/api/concerns/{concern_id}",
        f"/concerns/{concern_id}/amend",
        f"/api/concerns/{concern_id}/amend",
        f"/concerns/{concern_id}/sign-off",
        f"/api/concerns/{concern_id}/sign-off",
        f"/concerns/{concern_id}/export",
        "/concerns",
        "/api/concerns",
    ]
    body = {"fields": {"pupil": "UPN-CHANGED"}, "reason": "x"}
    for path in paths:
        for method in ("PUT", "PATCH", "DELETE"):
            status, _ = api_json(hub, method, path, dsl, body)
            assert status == 405, (method, path, status)
    for path in (f"/concerns/{concern_id}", f"/api/concerns/{concern_id}"):
        assert api_json(hub, "POST", path, dsl, body)[0] == 405
    db = hub.db()
    try:
        assert _rows(db, concern_id) == before
    finally:
        db.close()
    # The one way to change it: an amendment, which only adds rows.
    status, got = api_json(
        hub, "POST", f"/api/concerns/{concern_id}/amend", dsl,
        {"fields": {"pupil": "UPN-IMM2"}, "reason": "The reference was mistyped"},
    )  # fmt: skip
    assert status == 201, got
    db = hub.db()
    try:
        after = _rows(db, concern_id)
    finally:
        db.close()
    for table, rows in before.items():
        assert after[table][: len(rows)] == rows, table
    assert len(after["concern_entries"]) == 2 and len(after["concern_fields"]) == 4
    status, got = api_json(hub, "GET", f"/api/concerns/{concern_id}", dsl)
    entries = got["entries"]
    assert isinstance(entries, list)
    assert [e["fields"].get("pupil") for e in entries] == ["UPN-IMM", "UPN-IMM2"]
    assert entries[1]["reason"] == "The reference was mistyped" and entries[1]["actor"] == "dsl-1"


def test_a_coordinator_opens_concerns_but_reads_none(
    hub: DashboardHub, cookies: dict[str, str], context: BrowserContext, tmp_path: Path
) -> None:
    alert_id = hub.add_alert(4, "y7", device="lt-coord")
    coordinator = cookies["coordinator-1"]
    by_api = _open(hub, coordinator, "UPN-COORD", alert_ids=(alert_id,))
    assert api_json(hub, "GET", f"/api/concerns/{by_api}", coordinator)[0] == 403
    for path in (
        f"/concerns/{by_api}", f"/concerns/{by_api}/amend", f"/concerns/{by_api}/export",
        "/concerns", "/chronology?pupil=UPN-COORD", "/chronology?device=school/lt-coord",
    ):  # fmt: skip
        assert http(hub, "GET", path, cookie=coordinator).status == 403, path
    for path in ("/api/concerns", "/api/chronology?pupil=UPN-COORD"):
        assert api_json(hub, "GET", path, coordinator)[0] == 403, path
    assert api_json(hub, "POST", f"/api/concerns/{by_api}/sign-off", coordinator, {})[0] == 403
    amend = {"fields": {"seen": "More"}, "reason": "x"}
    assert api_json(hub, "POST", f"/api/concerns/{by_api}/amend", coordinator, amend)[0] == 403
    # In the browser: from the alert to the form, recorded, and told it went to the DSL.
    page = logged_in(context, hub, "coordinator-1")
    page.goto(f"{hub.url}/alerts/{alert_id}")
    _submit(page, "#h-concern ~ form button")
    page.fill("#c-pupil", "UPN-COORD")
    page.select_option("#c-category", "online safety")
    page.fill("#c-seen", "A blocked search seen over the pupil's shoulder")
    _submit(page, "text=Record the concern")
    assert re.search(r"/concerns/new\?recorded=\d+$", page.url), page.url
    assert "passed to the DSL" in page.inner_text("#recorded")
    page.screenshot(path=tmp_path / "coordinator-recorded.png", full_page=True)
    assert "Concerns" not in page.inner_text("nav")
    recorded = int(page.url.rsplit("=", 1)[1])
    status, got = api_json(hub, "GET", f"/api/concerns/{recorded}", cookies["dsl-1"])
    assert status == 200 and got["opened_by"] == "coordinator-1"
    assert [a["id"] for a in got["alerts"]] == [alert_id]  # type: ignore[attr-defined]


def test_a_limited_dsl_only_its_groups(hub: DashboardHub, cookies: dict[str, str]) -> None:
    y7_alert = hub.add_alert(3, "y7", device="lt-lim7")
    y8_alert = hub.add_alert(3, "y8", device="lt-lim8")
    lee, kim, dsl = cookies["limited-7"], cookies["limited-8"], cookies["dsl-1"]
    mine = _open(hub, lee, "UPN-SHARED", "y7", (y7_alert,))
    theirs = _open(hub, dsl, "UPN-SHARED", "y8", (y8_alert,))
    nobody = _open(hub, dsl, "UPN-SHARED", "")
    assert api_json(hub, "GET", f"/api/concerns/{mine}", lee)[0] == 200
    for concern_id in (theirs, nobody):
        assert api_json(hub, "GET", f"/api/concerns/{concern_id}", lee)[0] == 403
        assert http(hub, "GET", f"/concerns/{concern_id}", cookie=lee).status == 403
        assert http(hub, "GET", f"/concerns/{concern_id}/export", cookie=lee).status == 403
        amend = {"fields": {"seen": "x"}, "reason": "x"}
        assert api_json(hub, "POST", f"/api/concerns/{concern_id}/amend", lee, amend)[0] == 403
        assert api_json(hub, "POST", f"/api/concerns/{concern_id}/sign-off", lee, {})[0] == 403
    assert api_json(hub, "GET", f"/api/concerns/{mine}", kim)[0] == 403
    listed = api_json(hub, "GET", "/api/concerns?status=all", lee)[1]["concerns"]
    assert {c["group"] for c in listed} == {"y7"}  # type: ignore[attr-defined]
    items = api_json(hub, "GET", "/api/chronology?pupil=UPN-SHARED", lee)[1]["items"]
    assert {i["concern"] for i in items if i["concern"]} == {mine}  # type: ignore[attr-defined]
    assert {i["alert"] for i in items if i["alert"]} == {y7_alert}  # type: ignore[attr-defined]
    everything = api_json(hub, "GET", "/api/chronology?pupil=UPN-SHARED", dsl)[1]["items"]
    assert {i["concern"] for i in everything if i["concern"]} == {mine, theirs, nobody}  # type: ignore[attr-defined]
    # Opening: only in one of its groups, only from alerts it may see.
    fields = {"pupil": "UPN-X", "category": "other", "seen": "x"}
    for body in (
        {"fields": fields, "group": "y8"},
        {"fields": fields, "group": ""},
        {"fields": fields, "alerts": [y8_alert]},
        {"fields": fields, "group": "y7", "alerts": [y8_alert]},
    ):
        status, got = api_json(hub, "POST", "/api/concerns", lee, body)
        assert status == 403, (body, got)


ALL_ROUTES = [
    ("GET", "/concerns"),
    ("GET", "/concerns/new"),
    ("POST", "/concerns"),
    ("GET", "/concerns/{id}"),
    ("GET", "/concerns/{id}/amend"),
    ("POST", "/concerns/{id}/amend"),
    ("POST", "/concerns/{id}/sign-off"),
    ("GET", "/concerns/{id}/export"),
    ("GET", "/chronology?pupil=UPN-R"),
    ("GET", "/api/concerns"),
    ("POST", "/api/concerns"),
    ("GET", "/api/concerns/{id}"),
    ("POST", "/api/concerns/{id}/amend"),
    ("POST", "/api/concerns/{id}/sign-off"),
    ("GET", "/api/chronology?pupil=UPN-R"),
]


@pytest.mark.parametrize("who", ["governor-1", "technician-1", "admin-1"])
def test_roles_without_concerns_get_403_everywhere(
    hub: DashboardHub, cookies: dict[str, str], who: str
) -> None:
    concern_id = _open(hub, cookies["dsl-1"], "UPN-R")
    db = hub.db()
    try:
        before = _rows(db, concern_id)
    finally:
        db.close()
    body = {"fields": {"pupil": "UPN-R", "category": "other", "seen": "x"}, "reason": "x"}
    for method, path in ALL_ROUTES:
        path = path.format(id=concern_id)
        if path.startswith("/api/"):
            status, _ = api_json(
                hub, method, path, cookies[who], body if method == "POST" else None
            )
        else:
            form = {"pupil": "UPN-R", "category": "other", "seen": "x", "reason": "x"}
            status = http(
                hub, method, path, cookie=cookies[who], form=form if method == "POST" else None
            ).status
        assert status == 403, (who, method, path, status)
    db = hub.db()
    try:
        assert _rows(db, concern_id) == before
        assert int(db.execute("SELECT COUNT(*) FROM concerns")[0][0]) >= 1
        viewed = db.execute(
            "SELECT COUNT(*) FROM access_log WHERE username = ? AND what IN "
            "('concern', 'chronology')",
            (who,),
        )
        assert int(viewed[0][0]) == 0  # a refusal is no view
    finally:
        db.close()


def test_every_concern_view_goes_to_the_access_log(
    hub: DashboardHub, cookies: dict[str, str], context: BrowserContext
) -> None:
    alert_id = hub.add_alert(3, "y7", device="lt-logged")
    lee = cookies["limited-7"]
    concern_id = _open(hub, cookies["dsl-1"], "UPN-LOG", "y7", (alert_id,))
    db = hub.db()
    try:
        start = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM access_log")[0][0])
    finally:
        db.close()
    assert http(hub, "GET", f"/concerns/{concern_id}", cookie=lee).status == 200
    assert http(hub, "GET", f"/concerns/{concern_id}/amend", cookie=lee).status == 200
    assert api_json(hub, "GET", f"/api/concerns/{concern_id}", lee)[0] == 200
    assert http(hub, "GET", f"/concerns/{concern_id}/export", cookie=lee).status == 200
    assert http(hub, "GET", "/chronology?pupil=UPN-LOG", cookie=lee).status == 200
    assert api_json(hub, "GET", "/api/chronology?device=school/lt-logged", lee)[0] == 200
    db = hub.db()
    try:
        rows = db.execute(
            "SELECT role, what, item, via FROM access_log WHERE username = 'limited-7' "
            "AND id > ? ORDER BY id",
            (start,),
        )
    finally:
        db.close()
    assert [tuple(r) for r in rows] == [
        ("dsl_limited", "concern", str(concern_id), "page"),
        ("dsl_limited", "concern", str(concern_id), "page"),
        ("dsl_limited", "concern", str(concern_id), "api"),
        ("dsl_limited", "concern", str(concern_id), "export"),
        ("dsl_limited", "chronology", "pupil:UPN-LOG", "page"),
        ("dsl_limited", "chronology", "device:school/lt-logged", "api"),
    ]
    # The DSL reads it on the access log page.
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/access-log?username=limited-7")
    text = page.inner_text("main")
    assert f"concern {concern_id}" in text and "chronology pupil:UPN-LOG" in text


GOOD = {"pupil": "UPN-BAD", "category": "other", "seen": "Something"}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"fields": {"category": "other", "seen": "x"}}, 400, "Pupil reference: required"),
        ({"fields": {"pupil": "UPN", "category": "other"}}, 400, "What was seen: required"),
        ({"fields": {"pupil": "UPN", "seen": "x"}}, 400, "Category: required"),
        ({"fields": {"pupil": " ", "category": "other", "seen": "x"}}, 400, "Pupil reference"),
        ({"group": "y7"}, 422, "fields"),
        ({"fields": {**GOOD, "happened": "yesterday"}}, 400, "a date and time like"),
        ({"fields": {**GOOD, "happened": "2026-02-30T10:00"}}, 400, "a date and time like"),
        ({"fields": {**GOOD, "parents_informed_at": "2026-03-01"}}, 400, "a date and time"),
        ({"fields": GOOD, "alerts": [999_999]}, 400, "there is no alert 999999"),
        ({"fields": GOOD, "alerts": [10**20]}, 400, "there is no alert"),
        ({"fields": {**GOOD, "pupil": "U" * 65}}, 400, "Pupil reference: at most 64"),
        ({"fields": {**GOOD, "seen": "x" * 20_001}}, 422, "at most 20000"),
        ({"fields": {**GOOD, "name": "A Pupil"}}, 400, "unknown field 'name'"),
        ({"fields": {**GOOD, "category": "whatever"}}, 400, "choose one of the list"),
        ({"fields": {**GOOD, "parents_informed": "ye"}}, 400, "yes, no or not yet"),
        ({"fields": {**GOOD, "device": "lt-042"}}, 400, "site/device"),
        ({"fields": GOOD, "group": "g" * 65}, 422, "at most 64"),
    ],
)
def test_bad_input_to_the_api_is_a_clear_4xx(
    hub: DashboardHub, cookies: dict[str, str], body: dict[str, object], status: int, says: str
) -> None:
    got_status, got = api_json(hub, "POST", "/api/concerns", cookies["dsl-1"], body)
    assert got_status == status, got
    assert says in json.dumps(got["detail"]), got


def test_bad_amendments_and_ids_are_clear(hub: DashboardHub, cookies: dict[str, str]) -> None:
    dsl = cookies["dsl-1"]
    concern_id = _open(hub, dsl, "UPN-AM")
    path = f"/api/concerns/{concern_id}/amend"
    for body, status, says in (
        ({"fields": {"seen": "More"}, "reason": " "}, 400, "Reason for the amendment: required"),
        ({"fields": {"seen": "More"}}, 422, "reason"),
        ({"fields": {"pupil": "UPN-AM"}, "reason": "x"}, 400, "changes no field"),
        ({"fields": {"pupil": ""}, "reason": "x"}, 400, "Pupil reference: required"),
        ({"fields": {"happened": "soon"}, "reason": "x"}, 400, "a date and time like"),
    ):
        got_status, got = api_json(hub, "POST", path, dsl, body)
        assert got_status == status and says in json.dumps(got["detail"]), (body, got)
    for missing in ("/api/concerns/999999", "/api/concerns/99999999999999999999"):
        assert api_json(hub, "GET", missing, dsl)[0] == 404
        assert (
            api_json(hub, "POST", missing + "/amend", dsl, {"fields": {}, "reason": "x"})[0] == 404
        )
        assert api_json(hub, "POST", missing + "/sign-off", dsl, {})[0] == 404
    assert api_json(hub, "GET", "/api/concerns/abc", dsl)[0] == 422
    assert (
        api_json(hub, "POST", f"/api/concerns/{concern_id}/sign-off", dsl, {"note": "ok"})[0] == 201
    )
    status, got = api_json(hub, "POST", f"/api/concerns/{concern_id}/sign-off", dsl, {})
    assert status == 409 and "already signed off" in str(got["detail"])
    for query in ("", "?pupil=x&device=school/lt", "?device=nodevice", "?device=/lt"):
        status, got = api_json(hub, "GET", f"/api/chronology{query}", dsl)
        assert status == 400 and got["detail"], query
    assert api_json(hub, "GET", "/api/concerns?status=gone", dsl)[0] == 400
    assert api_json(hub, "GET", "/api/concerns?pupil=" + "p" * 65, dsl)[0] == 422


def test_bad_input_to_the_pages_is_a_clear_4xx(hub: DashboardHub, cookies: dict[str, str]) -> None:
    dsl = cookies["dsl-1"]
    token = _csrf(hub, dsl, "/concerns/new")
    good = {"csrf": token, **GOOD}
    for form, says in (
        ({**good, "pupil": ""}, "Pupil reference: required"),
        ({**good, "happened": "2026-13-01T10:00"}, "a date and time like"),
        ({**good, "alert": "999999"}, "there is no alert 999999"),
        ({**good, "alert": "1x"}, "cannot take (alert: Input should be a valid integer"),
        ({**good, "pupil": "U" * 65}, "at most 64"),
        ({**good, "seen": "x" * 20_001}, "(seen: String should have at most 20000 characters)"),
    ):
        answer = http(hub, "POST", "/concerns", cookie=dsl, form=form)
        assert answer.status == 400, (form.keys(), answer.status)
        assert says in answer.body.replace("&#39;", "'"), (says, answer.body[-600:])
    concern_id = _open(hub, dsl, "UPN-PAGE")
    token = _csrf(hub, dsl, f"/concerns/{concern_id}/amend")
    answer = http(
        hub, "POST", f"/concerns/{concern_id}/amend", cookie=dsl,
        form={"csrf": token, **GOOD, "pupil": "UPN-PAGE", "reason": ""},
    )  # fmt: skip
    assert answer.status == 400 and "Reason for the amendment: required" in answer.body
    for path, status in (
        ("/concerns/new?alerts=abc", 400),
        ("/concerns/new?alerts=999999", 400),
        ("/concerns/new?alert=999999", 400),
        ("/concerns/999999", 404),
        ("/concerns/99999999999999999999", 404),
        ("/concerns/999999/export", 404),
        ("/concerns/abc", 400),
        ("/concerns?status=gone", 400),
        ("/chronology", 400),
        ("/chronology?device=nodevice", 400),
        ("/concerns/1/export?format=pdf", 400),
        ("/alerts/99999999999999999999", 404),
    ):
        answer = http(hub, "GET", path, cookie=dsl)
        assert answer.status == status, (path, answer.status)
        assert 'role="alert"' in answer.body, path  # a page that says why
    # No token: refused, nothing recorded.
    answer = http(hub, "POST", "/concerns", cookie=dsl, form=GOOD)
    assert answer.status == 403


def test_the_openapi_document_describes_the_concern_and_triageapi_json(hub: DashboardHub) -> None:
    answer = http(hub, "GET", "/api/openapi.json")
    assert answer.status == 200
    paths = json.loads(answer.body)["paths"]
    for path, method in (
        ("/api/concerns", "post"),
        ("/api/concerns", "get"),
        ("/api/concerns/{concern_id}", "get"),
        ("/api/concerns/{concern_id}/amend", "post"),
        ("/api/concerns/{concern_id}/sign-off", "post"),
        ("/api/chronology", "get"),
        ("/api/alerts/new", "get"),
        ("/api/alerts/{alert_id}/close", "post"),
        ("/api/alerts/{alert_id}/reopen", "post"),
    ):
        assert method in paths.get(path, {}), (path, method)
    for page in ("/concerns", "/concerns/{concern_id}", "/chronology", "/alerts/{alert_id}"):
        assert page not in paths  # the pages are not the API
