"""Alert triage end to end: the store's actions and their trail (SQLite and PostgreSQL), the
queue's order with escalated alerts first, and a real `hedgerow-hub serve` driven by Chromium
(mouse and keyboard alone) and by its JSON API. Screenshots are kept under tmp_path."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page

from hub import alert_triage, alerts
from hub.model import Alert
from hub.store import Database
from hub.store.reports import BlockedEntry, NewReport, insert_reports
from hub.web.permissions import Principal, Role
from hub.web.queue import QueueFilter, new_since, read_queue
from hub.web.triage import read_timeline
from tests.services import mosquitto
from tests.web_support import (
    SITE,
    DashboardHub,
    api_json,
    dashboard_hub,
    logged_in,
    login_cookie,
)

DSL = Principal(1, "dana", Role.DSL)
LIMITED = Principal(2, "lee", Role.DSL_LIMITED, frozenset({"y7"}))
POLICY = alerts.AlertPolicy()  # cooldown one hour


# -- the store --


def _finding(
    severity: int,
    *,
    at: int = 1_000,
    device: str = "lt-1",
    group: str | None = "y7",
    key: str = "k",
    evidence: tuple[int, ...] = (),
) -> alerts.Finding:
    return alerts.Finding(
        rule="blocked-content",
        severity=severity,
        site=SITE,
        device=device,
        device_class="laptop",
        group=group,
        key=key,
        summary=f"{device} severity {severity} at {at}",
        at_ms=at,
        evidence=evidence,
    )


def _trail(db: Database, alert_id: int) -> list[tuple[str, str, str | None, str | None]]:
    return [(t.actor, t.action, t.note, t.value) for t in alert_triage.trail(db, alert_id)]


class Heard:
    """An AlertListener that keeps what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[int, int, bool]] = []  # (alert id, severity, escalated)

    def on_alert(self, db: Database, alert: Alert, escalated: bool) -> None:
        """Keep the alert's id and severity."""
        self.told.append((alert.id, alert.severity, escalated))


def test_each_action_writes_its_trail_row(db: Database) -> None:
    alert_id = alerts.record(db, _finding(3), POLICY).id
    alerts.acknowledge(db, alert_id, 2_000, "dana", "Looking")
    alert_triage.assign(db, alert_id, 3_000, "dana", "lee", "Lee knows the class")
    alert_triage.add_note(db, alert_id, 4_000, "lee", "Spoke to the teacher")
    alert_triage.escalate_to_dsl(db, alert_id, 5_000, "lee", "A pattern this week")
    triage = alert_triage.get_triage(db, alert_id)
    assert (triage.assignee, triage.outcome, triage.escalated_ms) == ("lee", None, 5_000)
    alert_triage.close_with_outcome(
        db, alert_id, 6_000, "dana", "early_help", "Referred to early help"
    )
    assert _trail(db, alert_id) == [
        ("hedgerow-hub", "opened", None, None),
        ("dana", "acknowledged", "Looking", None),
        ("dana", "assigned", "Lee knows the class", "lee"),
        ("lee", "note", "Spoke to the teacher", None),
        ("lee", "escalated to the DSL", "A pattern this week", None),
        ("dana", "closed", "Referred to early help", "early_help"),
    ]
    assert [t.at_ms for t in alert_triage.trail(db, alert_id)] == [n * 1_000 for n in range(1, 7)]
    assert alerts.get_alert(db, alert_id).status == "closed"
    # Closing ends the escalation (the queue no longer puts it first) and keeps the outcome.
    assert alert_triage.get_triage(db, alert_id) == alert_triage.Triage("lee", "early_help", None)


@pytest.mark.parametrize("outcome", sorted(alert_triage.OUTCOMES))
def test_every_policy_outcome_closes(db: Database, outcome: str) -> None:
    alert_id = alerts.record(db, _finding(2), POLICY).id
    closed = alert_triage.close_with_outcome(db, alert_id, 2_000, "dana", outcome, "Decided")
    assert closed.status == "closed"
    assert alert_triage.get_triage(db, alert_id).outcome == outcome


@pytest.mark.parametrize(
    ("outcome", "reason", "says"),
    [
        ("", "Decided", "outcome ''"),
        ("resolved", "Decided", "outcome 'resolved'"),
        ("False positive", "Decided", "must be one of"),  # the words are not the key
        ("false_positive", "", "the reason is required"),
        ("false_positive", "   ", "the reason is required"),
    ],
)
def test_closing_needs_a_policy_outcome_and_a_reason(
    db: Database, outcome: str, reason: str, says: str
) -> None:
    alert_id = alerts.record(db, _finding(2), POLICY).id
    with pytest.raises(alerts.AlertError, match=says):
        alert_triage.close_with_outcome(db, alert_id, 2_000, "dana", outcome, reason)
    assert alerts.get_alert(db, alert_id).status == "open"
    assert _trail(db, alert_id) == [("hedgerow-hub", "opened", None, None)]


def test_what_a_state_forbids(db: Database) -> None:
    alert_id = alerts.record(db, _finding(2), POLICY).id
    needs_words: list[Callable[[], Alert]] = [
        lambda: alert_triage.add_note(db, alert_id, 2_000, "dana", " "),
        lambda: alert_triage.escalate_to_dsl(db, alert_id, 2_000, "dana", ""),
        lambda: alert_triage.assign(db, alert_id, 2_000, "dana", ""),
    ]
    for refused in needs_words:
        with pytest.raises(alerts.AlertError, match="is required"):
            refused()
    alert_triage.escalate_to_dsl(db, alert_id, 2_000, "dana", "Worrying")
    with pytest.raises(alerts.AlertError, match="already escalated"):
        alert_triage.escalate_to_dsl(db, alert_id, 2_500, "dana", "Again")
    with pytest.raises(alerts.AlertError, match="is not closed"):
        alert_triage.reopen(db, alert_id, 2_500, "dana", "Why")
    alert_triage.close_with_outcome(db, alert_id, 3_000, "dana", "no_further_action", "Checked")
    closed_refusals: list[Callable[[], Alert]] = [
        lambda: alerts.acknowledge(db, alert_id, 4_000, "dana"),
        lambda: alert_triage.assign(db, alert_id, 4_000, "dana", "lee"),
        lambda: alert_triage.escalate_to_dsl(db, alert_id, 4_000, "dana", "Later"),
        lambda: alert_triage.close_with_outcome(db, alert_id, 4_000, "dana", "police", "Again"),
    ]
    for refused in closed_refusals:
        with pytest.raises(alerts.AlertError, match="closed"):
            refused()
    alert_triage.add_note(db, alert_id, 4_000, "dana", "A note on a closed alert is allowed")
    with pytest.raises(alerts.AlertError, match="the reason is required"):
        alert_triage.reopen(db, alert_id, 4_000, "dana", "")
    assert [a for _, a, _, _ in _trail(db, alert_id)] == [
        "opened", "escalated to the DSL", "closed", "note",
    ]  # fmt: skip


def test_a_closed_alert_that_escalates_reopens(db: Database) -> None:
    heard = Heard()
    alert_id = alerts.record(db, _finding(3, at=1_000), POLICY, heard).id
    alert_triage.close_with_outcome(
        db, alert_id, 2_000, "dana", "false_positive", "A research task"
    )
    # The same condition again, no more severe, within the cooldown: folded in, still closed.
    same = alerts.record(db, _finding(3, at=3_000), POLICY, heard)
    assert (same.id, alerts.get_alert(db, alert_id).status) == (alert_id, "closed")
    # More severe: the person who closed it decided on less, so it opens again.
    worse = alerts.record(db, _finding(5, at=4_000), POLICY, heard)
    assert worse.id == alert_id
    again = alerts.get_alert(db, alert_id)
    assert (again.status, again.severity, again.count) == ("open", 5, 3)
    assert alert_triage.get_triage(db, alert_id).outcome is None
    assert _trail(db, alert_id)[-1] == (
        "hedgerow-hub",
        "reopened",
        "severity 3 to 5 after it was closed",
        None,
    )
    assert heard.told == [(alert_id, 3, False), (alert_id, 5, True)]  # the chain hears it
    assert len(read_queue(db, DSL, QueueFilter()).alerts) == 1


def test_reopen_is_refused_while_a_newer_alert_of_the_condition_is_open(db: Database) -> None:
    old = alerts.record(db, _finding(3, at=1_000), POLICY).id
    alert_triage.close_with_outcome(
        db, old, 2_000, "dana", "managed_internally", "Handled in class"
    )
    after_cooldown = 2_000 + POLICY.cooldown_ms + 1
    newer = alerts.record(db, _finding(3, at=after_cooldown), POLICY).id
    assert newer != old
    with pytest.raises(alerts.AlertError, match=f"alert {newer} of the same condition is open"):
        alert_triage.reopen(db, old, after_cooldown + 1, "dana", "Same pupil again")
    assert alerts.get_alert(db, old).status == "closed"
    alert_triage.close_with_outcome(db, newer, after_cooldown + 2, "dana", "false_positive", "Test")
    reopened = alert_triage.reopen(
        db, old, after_cooldown + 3, "dana", "The first decision was wrong"
    )
    assert reopened.status == "open"
    assert alert_triage.get_triage(db, old).outcome is None
    assert _trail(db, old)[-1] == ("dana", "reopened", "The first decision was wrong", None)


def _all_pages(db: Database, who: Principal, f: QueueFilter, size: int) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        page = read_queue(db, who, f, cursor, limit=size)
        seen += [a.id for a in page.alerts]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


SEEN = [(5, 50), (1, 10), (4, 20), (2, 30), (5, 40), (1, 5), (3, 60)]  # (severity, first seen)


@pytest.mark.parametrize("size", [1, 2, 3, 50])
def test_escalated_alerts_head_the_queue_and_paging_never_skips(db: Database, size: int) -> None:
    # Two mild ones get escalated to the DSL.
    made = {
        (sev, at): alerts.record(db, _finding(sev, at=at, device=f"d{n}"), POLICY).id
        for n, (sev, at) in enumerate(SEEN)
    }
    alert_triage.escalate_to_dsl(db, made[(1, 10)], 100, "lee", "Pattern")
    alert_triage.escalate_to_dsl(db, made[(2, 30)], 100, "lee", "Pattern")
    order = [(2, 30), (1, 10), (5, 40), (5, 50), (4, 20), (3, 60), (1, 5)]
    assert _all_pages(db, DSL, QueueFilter(), size) == [made[k] for k in order]
    first = read_queue(db, DSL, QueueFilter(), limit=size)
    assert {a.id for a in first.alerts if first.triage[a.id].escalated_ms is not None} == {
        made[k] for k in order[: min(size, 2)]
    }
    # Closing an escalated alert takes it out of the head of the queue.
    alert_triage.close_with_outcome(db, made[(2, 30)], 200, "dana", "false_positive", "Test page")
    everything = _all_pages(db, DSL, QueueFilter(status="all"), size)
    closed_order = [(1, 10), (5, 40), (5, 50), (4, 20), (3, 60), (2, 30), (1, 5)]
    assert everything == [made[k] for k in closed_order]
    assert sorted(everything) == sorted(made.values())


def test_the_assignee_filter(db: Database) -> None:
    ids = [alerts.record(db, _finding(3, device=f"d{n}"), POLICY).id for n in range(4)]
    alert_triage.assign(db, ids[0], 2_000, "dana", "lee")
    alert_triage.assign(db, ids[2], 2_000, "dana", "lee")
    alert_triage.assign(db, ids[3], 2_000, "dana", "dana")
    alert_triage.assign(db, ids[3], 2_500, "dana", "lee")  # reassigned: the latest counts
    alert_triage.assign(db, ids[1], 2_000, "dana", "dana")
    by_lee = read_queue(db, DSL, QueueFilter(assignee="lee"))
    assert sorted(a.id for a in by_lee.alerts) == [ids[0], ids[2], ids[3]]
    assert by_lee.counts == {3: 3}
    assert [a.id for a in read_queue(db, DSL, QueueFilter(assignee="dana")).alerts] == [ids[1]]
    assert read_queue(db, DSL, QueueFilter(assignee="nobody")).alerts == []
    assert QueueFilter(assignee="lee").query() == {"status": "open", "assignee": "lee"}


def test_new_since_counts_only_what_the_principal_may_see(db: Database) -> None:
    alerts.record(db, _finding(3, device="before"), POLICY)
    since = alert_triage.newest_id(db)
    mine = alerts.record(db, _finding(2, device="mine", group="y7"), POLICY).id
    alerts.record(db, _finding(5, device="theirs", group="y8"), POLICY)
    nobody = alerts.record(db, _finding(4, device="nogroup", group=None), POLICY).id
    settled = alerts.record(db, _finding(3, device="settled", group="y7"), POLICY).id
    alerts.acknowledge(db, settled, 2_000, "dana")  # no longer open: not announced
    assert new_since(db, LIMITED, since) == (1, mine)
    assert new_since(db, DSL, since) == (3, nobody)
    assert new_since(db, DSL, alert_triage.newest_id(db)) == (0, alert_triage.newest_id(db))
    assert new_since(db, LIMITED, mine) == (0, mine)


def _report(
    seq: int,
    at: int,
    body: dict[str, object],
    *,
    device: str = "lt-time",
    kind: str = "event",
    ip: str | None = None,
    blocked: tuple[BlockedEntry, ...] = (),
) -> NewReport:
    return NewReport(
        site=SITE,
        device=device,
        seq=seq,
        kind=kind,
        digest=bytes([seq % 256]) * 32,
        time_ms=at,
        received_ms=at,
        client_ip=ip,
        client_user=None,
        body=json.dumps(body),
        blocked=blocked,
    )


MINUTE = 60_000
# What a laptop reported around the alert: (ms from the alert, event). The first and last are
# further away than "a few minutes".
AROUND: list[tuple[int, dict[str, object]]] = [
    (-30 * MINUTE, {"type": "site_state", "detail": {"state": "captive"}}),
    (-3 * MINUTE, {"type": "site_state", "detail": {"state": "off_site", "previous": "on_site"}}),
    (-1 * MINUTE, {"type": "bypass", "category": "vpn", "detail": {"method": "vpn"}}),
    (2 * MINUTE, {"type": "tamper", "detail": {"what": "resolver_changed", "restored": True}}),
    (40 * MINUTE, {"type": "tamper", "detail": {"what": "late_change"}}),
]


def _write_timeline(db: Database, now: int, device: str = "lt-time") -> int:
    """Write the laptop's events and a summary with a blocked name, as ingest writes them;
    return the summary's id."""
    reports = [
        _report(n + 1, now + offset, {"v": 1, "at": now + offset, **event}, device=device)
        for n, (offset, event) in enumerate(AROUND)
    ]
    summary = _report(
        10,
        now,
        {"v": 1, "window": 300},
        kind="summary",
        device=device,
        blocked=(BlockedEntry("harm.example", "self-harm", 4),),
    )
    with db.transaction():
        ids = insert_reports(db, [*reports, summary])
    return ids[(SITE, device, 10)]


def test_the_timeline_reads_the_device_a_few_minutes_either_side(db: Database) -> None:
    now = 10_000_000
    summary_id = _write_timeline(db, now)
    alert = alerts.record(db, _finding(4, at=now, device="lt-time", evidence=(summary_id,)), POLICY)
    texts = [(t.time_ms - now, t.kind, t.text) for t in read_timeline(db, alert, set())]
    assert texts == [
        (-180_000, "site", "Site state: off site (was on site)"),
        (-60_000, "bypass", "Bypass attempt: vpn"),
        (0, "blocked", "Blocked harm.example (self-harm, 4 times)"),
        (120_000, "tamper", "Tamper: resolver_changed"),
    ]


def test_behind_a_dns_filter_the_timeline_is_the_alerts_clients_only(db: Database) -> None:
    now = 10_000_000
    mine = _report(
        1, now, {"v": 1}, kind="summary", device="pi", ip="10.0.0.7",
        blocked=(BlockedEntry("mine.example", "gambling", 1),),
    )  # fmt: skip
    other = _report(
        2, now, {"v": 1}, kind="summary", device="pi", ip="10.0.0.9",
        blocked=(BlockedEntry("other.example", "gambling", 1),),
    )  # fmt: skip
    with db.transaction():
        ids = insert_reports(db, [mine, other])
    finding = alerts.Finding(
        rule="blocked-content", severity=3, site=SITE, device="pi", device_class="sinkhole",
        group="y7", key="10.0.0.7", summary="A client of the filter", at_ms=now,
        evidence=(ids[(SITE, "pi", 1)],),
    )  # fmt: skip
    alert = alerts.record(db, finding, POLICY)
    shown = [t.text for t in read_timeline(db, alert, {"10.0.0.7"})]
    assert shown == ["Blocked mine.example (gambling, 1 time)"]


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
    root = tmp_path_factory.mktemp("triage") / "hub"
    with mosquitto() as broker, dashboard_hub(root, broker.url) as running:
        for username, (role, *groups) in USERS.items():
            running.add_user(username, role, *groups)
        yield running


@pytest.fixture(scope="module")
def cookies(hub: DashboardHub) -> dict[str, str]:
    """A session per account, logged in through the real form."""
    return {username: login_cookie(hub, username) for username in USERS}


def _submit(page: Page, button: str) -> None:
    """Press a form's button and wait for the page the hub answers with (the same alert)."""
    with page.expect_navigation():
        page.click(button)


def test_triage_to_an_outcome_in_the_browser(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    alert_id = hub.add_alert(3, "y7", device="lt-triage", name="triage.example")
    page = logged_in(context, hub, "coordinator-1")
    page.goto(f"{hub.url}/alerts")
    page.click(f"a[href='/alerts/{alert_id}']")
    page.wait_for_url(f"{hub.url}/alerts/{alert_id}")
    options = page.locator("#assignee option").all_inner_texts()
    # Who may see and act on a y7 alert: not the y8 DSL, the governor or the technician.
    assert options == ["coordinator-1", "dsl-1", "limited-7"]
    page.select_option("#assignee", "limited-7")
    page.fill("#assign-note", "Year 7 is Lee's")
    _submit(page, "#h-assign ~ button")
    assert page.inner_text("#assigned") == "limited-7"
    page.fill("#note-text", "Asked the class teacher what the lesson was")
    _submit(page, "#h-note ~ button")
    page.fill("#escalate-note", "Third time this week")
    _submit(page, "#h-escalate ~ button")
    assert page.inner_text("#escalated").startswith("⚑ yes")
    page.goto(f"{hub.url}/alerts")
    first = page.locator(".queue li").first
    assert "escalated to the DSL" in first.inner_text() and "lt-triage" in first.inner_text()
    page.screenshot(path=tmp_path / "queue-escalated.png", full_page=True)
    page.goto(f"{hub.url}/alerts/{alert_id}")
    page.select_option("#outcome", "managed_internally")
    page.fill("#close-note", "Talked it through with the pupil and parents")
    _submit(page, "#h-close ~ button")
    assert page.inner_text("#status") == "closed"
    assert page.inner_text("#outcome-shown") == "Managed internally"
    trail = page.inner_text("#trail")
    for line in (
        "assigned (limited-7) by coordinator-1: Year 7 is Lee's",
        "note by coordinator-1: Asked the class teacher what the lesson was",
        "escalated to the DSL by coordinator-1: Third time this week",
        "closed (Managed internally) by coordinator-1: Talked it through with the pupil and",
    ):
        assert line in trail, (line, trail)
    page.screenshot(path=tmp_path / "closed.png", full_page=True)
    # Closed: only reopen and note are offered.
    assert page.locator("#h-reopen").count() == 1 and page.locator("#h-close").count() == 0
    # The browser itself refuses a close without an outcome; the server would too (409).
    api = context.request.get(f"{hub.url}/api/alerts/{alert_id}").json()
    assert [(t["action"], t["value"]) for t in api["trail"]] == [
        ("opened", None), ("assigned", "limited-7"), ("note", None),
        ("escalated to the DSL", None), ("told the DSL", None), ("closed", "managed_internally"),
    ]  # fmt: skip
    assert api["outcome"] == "managed_internally" and api["escalated_to_dsl"] is False


def test_a_refused_action_says_why_on_the_page(hub: DashboardHub, context: BrowserContext) -> None:
    alert_id = hub.add_alert(2, "y7", device="lt-refused")
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/alerts/{alert_id}")
    token = page.get_attribute("input[name=csrf]", "value")
    assert token
    same = {"Origin": hub.url, "Sec-Fetch-Site": "same-origin"}
    answer = context.request.post(
        f"{hub.url}/alerts/{alert_id}/close",
        form={"csrf": token, "outcome": "", "note": "no outcome"},
        headers=same,
        max_redirects=0,
    )
    assert answer.status == 409
    assert "That could not be done: outcome &#39;&#39;: must be one of" in answer.text()
    no_token = context.request.post(
        f"{hub.url}/alerts/{alert_id}/close",
        form={"outcome": "police", "note": "x"},
        headers=same,
        max_redirects=0,
    )
    assert no_token.status == 403
    page.reload()
    assert page.inner_text("#status") == "open"


def _tab_to(page: Page, element_id: str) -> None:
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} cannot be reached with Tab")


def test_keyboard_only_triage_to_an_outcome(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    alert_id = hub.add_alert(4, "y8", device="lt-keyboard")
    page = context.new_page()
    page.goto(f"{hub.url}/alerts/{alert_id}")  # the email link: to the login form first
    page.keyboard.press("Tab")  # the skip link
    _tab_to(page, "username")
    page.keyboard.type("dsl-1")
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{hub.url}/alerts/{alert_id}")
    _tab_to(page, "outcome")
    page.keyboard.type("No further")  # a closed <select> picks the option typed
    assert page.evaluate("document.activeElement.value") == "no_further_action"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "close-note"
    page.keyboard.type("Checked with the keyboard alone")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Close"
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent === 'closed'")
    trail = page.inner_text("#trail")
    assert "closed (No further action) by dsl-1: Checked with the keyboard alone" in trail
    page.screenshot(path=tmp_path / "keyboard-closed.png", full_page=True)


def test_the_same_actions_through_the_jsonapi_json(
    hub: DashboardHub, cookies: dict[str, str]
) -> None:
    alert_id = hub.add_alert(4, "y7", device="lt-api")
    base = f"/api/alerts/{alert_id}"
    dsl = cookies["dsl-1"]

    def act(action: str, who: str = "dsl-1", **body: str) -> tuple[int, dict[str, object]]:
        return api_json(hub, "POST", f"{base}/{action}", cookies[who], body)

    status, got = act("acknowledge", note="Seen")
    assert status == 200 and got["status"] == "acknowledged"
    status, got = act("acknowledge")
    assert status == 409 and "already acknowledged" in str(got["detail"])
    status, got = act("assign", assignee="limited-8")  # y8's DSL may not see a y7 alert
    assert status == 409 and "may not see this alert" in str(got["detail"])
    status, got = act("assign", assignee="governor-1")
    assert status == 409
    status, got = act("assign", assignee="limited-7", note="Year 7")
    assert status == 200 and got["assignee"] == "limited-7"
    status, got = act("note", note="")
    assert status == 409 and "the note is required" in str(got["detail"])
    status, got = act("note", who="limited-7", note="I will speak to the pupil")
    assert status == 200
    status, got = act("escalate", note="Needs the DSL")
    assert status == 200 and got["escalated_to_dsl"] is True
    status, got = act("escalate", note="Again")
    assert status == 409 and "already escalated" in str(got["detail"])
    status, got = act("close", note="Decided")
    assert status == 409 and "must be one of" in str(got["detail"])
    status, got = act("close", outcome="social_care")
    assert status == 409 and "the reason is required" in str(got["detail"])
    status, got = act("close", outcome="social_care", note="Referral made")
    assert status == 200 and got["status"] == "closed" and got["outcome"] == "social_care"
    assert got["escalated_to_dsl"] is False
    status, got = act("close", outcome="police", note="Again")
    assert status == 409 and "closed" in str(got["detail"])
    status, got = act("reopen")
    assert status == 409 and "the reason is required" in str(got["detail"])
    status, got = act("reopen", note="New information from the teacher")
    assert status == 200 and got["status"] == "open" and got["outcome"] is None
    trail = got["trail"]
    assert isinstance(trail, list)
    assert [(t["actor"], t["action"], t["value"]) for t in trail] == [
        ("hedgerow-hub", "opened", None),
        ("dsl-1", "acknowledged", None),
        ("dsl-1", "assigned", "limited-7"),
        ("limited-7", "note", None),
        ("dsl-1", "escalated to the DSL", None),
        ("hedgerow-hub", "told the DSL", None),  # the DSL emailed at once
        ("dsl-1", "closed", "social_care"),
        ("dsl-1", "reopened", None),
    ]
    # A field longer than the API accepts is a 422 with the reason, not a 500.
    status, got = act("note", note="x" * 2001)
    assert status == 422 and "at most 2000" in json.dumps(got)
    assert api_json(hub, "POST", "/api/alerts/999999/note", dsl, {"note": "x"})[0] == 404
    huge = "99999999999999999999"  # more than a BIGINT holds: no alert, not a database error
    assert api_json(hub, "GET", f"/api/alerts/{huge}", dsl)[0] == 404
    assert api_json(hub, "POST", f"/api/alerts/{huge}/note", dsl, {"note": "x"})[0] == 404
    assert api_json(hub, "GET", f"/api/alerts/new?since_id={huge}", dsl)[0] == 422
    # Each answer showed the alert: each is in the access log, as a view by API.
    db = hub.db()
    try:
        viewed = db.execute(
            "SELECT COUNT(*) FROM access_log WHERE username = 'limited-7' AND item = ? "
            "AND via = 'api'",
            (str(alert_id),),
        )
    finally:
        db.close()
    assert int(viewed[0][0]) == 1  # limited-7's one note
    assert api_json(hub, "POST", f"{base}/delete", dsl, {})[0] in (404, 405)


@pytest.mark.parametrize("action", ["acknowledge", "assign", "note", "escalate", "close", "reopen"])
def test_roles_without_alerts_act_are_refused_every_action(
    hub: DashboardHub, cookies: dict[str, str], action: str
) -> None:
    alert_id = hub.add_alert(3, "y7", device=f"lt-refuse-{action}")
    body = {"note": "x", "assignee": "dsl-1", "outcome": "police"}
    for who in ("technician-1", "governor-1", "admin-1"):
        status, got = api_json(hub, "POST", f"/api/alerts/{alert_id}/{action}", cookies[who], body)
        assert status == 403, (who, action, got)
    # The y8 DSL may not act on a y7 alert; the y7 DSL may.
    status, _ = api_json(
        hub, "POST", f"/api/alerts/{alert_id}/{action}", cookies["limited-8"], body
    )
    assert status == 403
    status, _ = api_json(hub, "GET", f"/api/alerts/{alert_id}", cookies["dsl-1"])
    assert status == 200
    trail = api_json(hub, "GET", f"/api/alerts/{alert_id}", cookies["dsl-1"])[1]["trail"]
    assert [t["action"] for t in trail] == ["opened"]  # type: ignore[attr-defined]


def test_limited_dsl_acts_only_on_its_groups(hub: DashboardHub, cookies: dict[str, str]) -> None:
    theirs = hub.add_alert(3, "y8", device="lt-y8-only")
    mine = hub.add_alert(3, "y7", device="lt-y7-only")
    lee = cookies["limited-7"]
    assert api_json(hub, "POST", f"/api/alerts/{theirs}/note", lee, {"note": "x"})[0] == 403
    status, got = api_json(
        hub, "POST", f"/api/alerts/{mine}/assign", lee, {"assignee": "limited-8"}
    )
    assert status == 409 and "may not see" in str(got["detail"])
    status, got = api_json(
        hub, "POST", f"/api/alerts/{mine}/assign", lee, {"assignee": "limited-7"}
    )
    assert status == 200 and got["assignee"] == "limited-7"
    # The queue filtered by assignee, as the page and API share it.
    status, got = api_json(hub, "GET", "/api/alerts?assignee=limited-7", cookies["dsl-1"])
    assert status == 200
    listed = [int(a["id"]) for a in got["alerts"]]  # type: ignore[attr-defined]
    assert mine in listed and theirs not in listed
    for alert_id in listed:
        assert api_json(hub, "GET", f"/api/alerts/{alert_id}", lee)[1]["assignee"] == "limited-7"
    status, got = api_json(hub, "GET", "/api/alerts/new?since_id=0", cookies["limited-8"])
    assert status == 200 and int(str(got["count"])) >= 1
    for who in ("technician-1", "governor-1", "admin-1"):
        assert api_json(hub, "GET", "/api/alerts/new?since_id=0", cookies[who])[0] == 403


def test_the_detail_page_shows_the_devices_timeline_and_earlier_alerts(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    db = hub.db()
    try:
        summary_id = _write_timeline(db, now, device="lt-story")
        with db.transaction():
            earlier = alerts.record(
                db, _finding(2, at=now - 1_000, device="lt-story", key="earlier"), POLICY
            ).id
            other = alerts.record(
                db, _finding(2, at=now - 500, device="lt-story", key="other", group="y8"), POLICY
            ).id
            alert_id = alerts.record(
                db,
                _finding(4, at=now, device="lt-story", key="now", evidence=(summary_id,)),
                POLICY,
            ).id
    finally:
        db.close()
    page = logged_in(context, hub, "dsl-1")
    page.goto(f"{hub.url}/alerts/{alert_id}")
    timeline = page.inner_text("#timeline")
    for text in (
        "Site state: off site (was on site)",
        "Bypass attempt: vpn",
        "Blocked harm.example (self-harm, 4 times)",
        "Tamper: resolver_changed",
    ):
        assert text in timeline, (text, timeline)
    assert "captive" not in timeline and "late_change" not in timeline  # not "a few minutes"
    rows = page.locator("#timeline tbody tr").all_inner_texts()
    assert "Site state" in rows[0] and "Tamper" in rows[-1]  # oldest first
    earlier_list = page.inner_text("#earlier")
    assert f"Alert {earlier}" in earlier_list and f"Alert {other}" in earlier_list
    page.screenshot(path=tmp_path / "timeline.png", full_page=True)
    # The y7 DSL sees the y7 alerts of the device, never the y8 one's summary.
    page.context.clear_cookies()
    lee = logged_in(context, hub, "limited-7")
    lee.goto(f"{hub.url}/alerts/{alert_id}")
    earlier_list = lee.inner_text("#earlier")
    assert f"Alert {earlier}" in earlier_list and f"Alert {other}" not in earlier_list


def test_new_alerts_are_announced_without_changing_the_list(
    hub: DashboardHub, context: BrowserContext, tmp_path: Path
) -> None:
    hub.add_alert(2, "y7", device="lt-before")
    page = logged_in(context, hub, "limited-7")
    page.clock.install()  # the page's timers run when the test says, not after 30 real seconds
    page.goto(f"{hub.url}/alerts")
    region = page.locator("#new-alerts")
    assert region.get_attribute("aria-live") == "polite"
    assert region.get_attribute("role") == "status"
    listed = page.locator("ol.queue")
    before = (listed.inner_html(), page.locator(".severity-counts").inner_html())
    assert "lt-before" in before[0]

    def poll() -> None:
        """Let the page's 30 s timer fire once and wait for the hub's answer."""
        with page.expect_response(lambda r: "/api/alerts/new?since_id=" in r.url) as answer:
            page.clock.run_for(30_000)
        assert answer.value.status == 200

    poll()
    assert region.inner_text() == ""  # nothing new yet
    hub.add_alert(3, "y8", device="lt-other-group")  # the y7 DSL is not told of a y8 alert
    poll()
    assert region.inner_text() == ""
    hub.add_alert(3, "y7", device="lt-new-1")
    hub.add_alert(4, "y7", device="lt-new-2")
    poll()
    page.locator("#new-alerts a").wait_for()
    assert region.inner_text() == "2 new alerts: show the updated queue."
    # The list under the reader's cursor did not move; only the announcement is new.
    assert (listed.inner_html(), page.locator(".severity-counts").inner_html()) == before
    page.screenshot(path=tmp_path / "new-alerts.png", full_page=True)
    page.click("#new-alerts a")
    page.wait_for_url(f"{hub.url}/alerts?status=open")
    text = page.inner_text("main")
    assert "lt-new-1" in text and "lt-new-2" in text and "lt-other-group" not in text
