"""The escalation chain: severe alerts told to one contact after another until a person acts.

Unit tests: a real SQLite hub, the real outbox and sender, a real SMTP server (aiosmtpd) and
an injected clock. The integration test: the real `hedgerow-hub serve` (real Mosquitto), the
chain decided by hub.toml's school hours, a restart in the middle, the email's link followed
to the real dashboard, and the acknowledgement made there.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hub import alert_triage, alerts
from hub.alerts import AlertPolicy, Finding, record
from hub.config import load_config
from hub.errors import ConfigError
from hub.model import Alert
from hub.notify import escalation
from hub.notify.hours import SchoolHours
from hub.notify.mail import alert_email, digest_email
from hub.notify.outbox import NotificationOutbox
from hub.notify.sender import NotificationSender
from hub.notify.settings import load_notify_settings
from hub.rules import blocked, bypass, concern, health, offsite, security, silent, tamper
from hub.store import Database
from tests.enroll_fixtures import SITE, make_hub
from tests.notify_fixtures import Mailbox, smtp_server
from tests.services import daemon, free_port, mosquitto, wait_port
from tests.waiting import wait_until
from tests.web_support import (
    PASSWORD,
    SESSION_COOKIE,
    DashboardHub,
    http,
    hub_cli,
    init_hub,
    login_cookie,
)

DEVICE = "lt-042"
DOMAIN = "bet.example"
PUPIL_IP = "10.0.0.7"
# A Wednesday in British Summer Time: 07:30 UTC is 08:30 in London, inside school hours.
SUMMER_0730_UTC = int(datetime(2026, 6, 17, 7, 30, tzinfo=UTC).timestamp() * 1000)
# A Wednesday in winter (GMT): 07:30 UTC is 07:30 in London, before school opens.
WINTER_0730_UTC = int(datetime(2026, 1, 14, 7, 30, tzinfo=UTC).timestamp() * 1000)


def contacts_toml(smtp_port: int, escalation_toml: str) -> str:
    return f"""
[notify]
from = "hedgerow@school.example"
base_url = "https://hub.school"

[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = false
timeout_s = 5

[contacts.dsl]
email = "dsl@school.example"
min_severity = 2

[contacts.deputy_dsl]
email = "deputy@school.example"
min_severity = 5

[contacts.head]
email = "head@school.example"
min_severity = 5

[contacts.oncall]
email = "oncall@school.example"
min_severity = 5

[contacts.tech]
email = "tech@school.example"
min_severity = 4

{escalation_toml}
"""


CHAIN = """
[escalation]
chain = ["dsl", "deputy_dsl", "head"]
out_of_hours_chain = ["oncall", "head"]
ack_seconds = 60
school_hours = "08:00-17:00"
school_days = "Mon-Fri"
timezone = "Europe/London"
"""


class World:
    """A hub with contacts and a chain, the outbox, the sender and a clock the test moves."""

    def __init__(self, tmp_path: Path, box: Mailbox, port: int, now: int) -> None:
        self.hub = make_hub(tmp_path, extra_toml=contacts_toml(port, CHAIN))
        self.box = box
        self.now = now
        self.outbox = NotificationOutbox(self.hub.config, clock=lambda: self.now)
        self.sender = NotificationSender(
            self.hub.config, self.hub.config.database_url, clock=lambda: self.now
        )
        self.db = self.hub.db()

    def alert(self, severity: int, rule: str = blocked.RULE, key: str = "gambling") -> Alert:
        finding = Finding(
            rule=rule,
            severity=severity,
            site=SITE,
            device=DEVICE,
            device_class="pupil-laptop",
            group="pupils",
            key=key,
            summary=f"{DEVICE} at {PUPIL_IP} was refused {DOMAIN} 12 times",
            at_ms=self.now,
        )
        with self.db.transaction():
            return record(self.db, finding, AlertPolicy(), self.outbox)

    def later(self, seconds: float) -> list[str]:
        """Move the clock on, run the sender once; the recipients of what it sent."""
        self.now += int(seconds * 1000)
        before = len(self.box.recipients)
        self.sender.run_once(self.db)
        return [r for rs in self.box.recipients[before:] for r in rs]

    def trail(self, alert_id: int) -> list[tuple[str, str, str | None]]:
        return [
            (actor, action, note) for _, actor, action, note in alerts.actions(self.db, alert_id)
        ]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    port = free_port()
    with smtp_server(port) as box:
        w = World(tmp_path, box, port, SUMMER_0730_UTC)
        try:
            yield w
        finally:
            w.db.close()


def test_the_chain_tells_one_contact_after_another_until_a_person_acts(world: World) -> None:
    alert = world.alert(4)
    # At once: the chain's first contact, and the contact outside the chain as before; not
    # the deputy or the head, who are in the chain.
    assert sorted(world.later(0)) == ["dsl@school.example", "tech@school.example"]
    assert world.later(59) == []  # within the ack time: nobody else
    assert world.later(1) == ["deputy@school.example"]
    escalated = world.box.messages[-1]
    assert (
        str(escalated["Subject"])
        == "Hedgerow alert: severity 4 (blocked content), not acknowledged"
    )
    body = _body(escalated)
    assert "Nobody acted on this alert within 1 min of telling dsl" in body
    assert f"https://hub.school/alerts/{alert.id}" in body
    trail = world.trail(alert.id)
    assert trail[1][:2] == (alerts.HUB_ACTOR, "notified")
    assert trail[2] == (alerts.HUB_ACTOR, "escalated to deputy_dsl", "not acknowledged in 1 min")
    # A person acknowledges: the head is never told.
    with world.db.transaction():
        alerts.acknowledge(world.db, alert.id, world.now + 1000, "dsl-1")
    assert world.later(120) == []
    assert world.later(600) == []
    state = escalation.get_escalation(world.db, alert.id)
    assert state is not None and state.status == escalation.ANSWERED
    assert state.told == ("dsl", "deputy_dsl")


def test_any_human_action_stops_the_chain_and_the_end_of_the_chain_is_recorded(
    world: World,
) -> None:
    noted = world.alert(5, key="a")
    silent_one = world.alert(5, key="b")
    world.later(0)
    with world.db.transaction():
        alert_triage.add_note(world.db, noted.id, world.now + 10, "dsl-1", "calling home")
    assert world.later(60) == ["deputy@school.example"]  # only for the alert nobody touched
    assert world.later(60) == ["head@school.example"]
    assert world.later(60) == []
    trail = world.trail(silent_one.id)
    assert [a for _, a, _ in trail if a.startswith("escalat")] == [
        "escalated to deputy_dsl",
        "escalated to head",
        "escalation exhausted",
    ]
    assert "dsl, deputy_dsl, head were told" in str(trail[-1][2])
    assert escalation.get_escalation(world.db, noted.id).status == escalation.ANSWERED  # type: ignore[union-attr]


def test_escalating_to_the_dsl_on_the_dashboard_tells_the_dsl_at_once(world: World) -> None:
    """ "Escalate to the DSL" (hub/web/triage.py, as the page and the API call it) tells the
    first contact of the chain in force at once, whatever the alert's severity, and says who
    escalated it; the subject still names no pupil, device or domain."""
    from hub.web.permissions import Principal, Role
    from hub.web.triage import ActionForm, apply_action

    alert = world.alert(3)  # below the chain's min_severity: nobody told yet
    assert world.later(0) == []
    who = Principal(7, "coordinator-1", Role.COORDINATOR)
    form = ActionForm(note="pupil disclosed something in class")
    settings = load_notify_settings(world.hub.config)
    apply_action(world.db, who, alert, "escalate", form, settings, world.now)
    assert world.later(0) == ["dsl@school.example"]
    message = world.box.messages[-1]
    subject = str(message["Subject"])
    assert subject == "Hedgerow alert: severity 3 (blocked content), escalated to the DSL"
    assert "coordinator-1 escalated this alert to the DSL" in _body(message)
    assert f"https://hub.school/alerts/{alert.id}" in _body(message)
    trail = world.trail(alert.id)
    assert trail[-2][:2] == ("coordinator-1", "escalated to the DSL")
    assert trail[-1][:2] == (alerts.HUB_ACTOR, escalation.TOLD_DSL)
    assert "dsl told at once: escalated to the DSL by coordinator-1" in str(trail[-1][2])
    # Out of hours the out-of-hours chain's first contact is the one told.
    world.now = WINTER_0730_UTC
    other = world.alert(3, key="other")
    apply_action(world.db, who, other, "escalate", form, settings, world.now)
    assert world.later(0) == ["oncall@school.example"]


def test_below_min_severity_the_chain_stays_out_of_it(world: World) -> None:
    world.alert(3)
    world.now += 1
    world.sender.run_once(world.db)
    assert escalation.get_escalation(world.db, 1) is None
    assert world.later(3600) == []


def test_out_of_hours_uses_the_other_chain_and_bst_moves_the_hours(tmp_path: Path) -> None:
    port = free_port()
    with smtp_server(port) as box:
        w = World(tmp_path, box, port, WINTER_0730_UTC)  # 07:30 GMT: before school
        try:
            w.alert(4)
            assert sorted(w.later(0)) == ["oncall@school.example", "tech@school.example"]
            assert w.later(60) == ["head@school.example"]
            trail = w.trail(1)
            assert "out of hours chain: oncall, head" in str(trail[1][2])
            assert trail[2][1:] == (
                "escalated to head",
                "not acknowledged in 1 min (out of hours chain)",
            )
        finally:
            w.db.close()
    hours = SchoolHours(8 * 60, 17 * 60, frozenset(range(5)), "Europe/London")
    assert hours.contains(SUMMER_0730_UTC)  # 08:30 BST
    assert not hours.contains(WINTER_0730_UTC)  # 07:30 GMT
    saturday = int(datetime(2026, 6, 20, 10, 0, tzinfo=UTC).timestamp() * 1000)
    assert not hours.contains(saturday)


def test_the_chain_survives_a_restart_of_the_sender(world: World) -> None:
    alert = world.alert(4)
    world.later(0)
    # A new sender (a restarted hub) with its own connection carries on from the database.
    world.sender = NotificationSender(
        load_config(world.hub.config.path), world.hub.config.database_url, clock=lambda: world.now
    )
    assert world.later(60) == ["deputy@school.example"]
    assert escalation.get_escalation(world.db, alert.id).told == ("dsl", "deputy_dsl")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        (
            'chain = ["dsl", "nobody"]',
            '[escalation] chain = ["dsl", "nobody"]: \'nobody\' is not a [contacts.nobody] table',
        ),
        ("chain = []", "must name at least one contact"),
        ('chain = ["dsl", "dsl"]', "names a contact twice"),
        (
            'chain = ["dsl"]\nschool_hours = "8-17"',
            '[escalation] school_hours = "8-17": must be "HH:MM-HH:MM"',
        ),
        ('chain = ["dsl"]\nschool_hours = "17:00-08:00"', "must start before it ends"),
        ('chain = ["dsl"]\nschool_days = "Fri-Mon"', "a range runs forwards"),
        ('chain = ["dsl"]\nschool_days = "weekdays"', 'must be days such as "Mon-Fri"'),
        ('chain = ["dsl"]\ntimezone = "Europe/Narnia"', "must be an IANA time zone"),
        (
            'chain = ["dsl"]\nack_minutes = 15\nack_seconds = 5',
            "set ack_minutes or ack_seconds, not both",
        ),
        ('chain = ["dsl"]\nack_minutes = 0', "[escalation] ack_minutes = 0: must be at least 1"),
        ('chain = ["dsl"]\nack_minute = 15', "[escalation] ack_minute = 15: is not a known key"),
    ],
)
def test_check_names_the_escalation_mistake(tmp_path: Path, toml: str, says: str) -> None:
    hub = make_hub(tmp_path, extra_toml=contacts_toml(2525, f"[escalation]\n{toml}\n"))
    with pytest.raises(ConfigError) as caught:
        load_notify_settings(hub.config)
    assert says in str(caught.value)
    done = hub_cli("check", "--config", str(hub.config.path))
    assert done.returncode == 1 and says in done.stderr


def test_ack_minutes_and_defaults(tmp_path: Path) -> None:
    hub = make_hub(
        tmp_path, extra_toml=contacts_toml(2525, '[escalation]\nchain = ["dsl", "head"]\n')
    )
    esc = load_notify_settings(hub.config).escalation
    assert esc is not None
    assert (esc.ack_ms, esc.min_severity, esc.waited) == (15 * 60_000, 4, "15 min")
    assert esc.out_of_hours_chain == ("dsl", "head")
    assert esc.hours == SchoolHours(8 * 60, 17 * 60, frozenset(range(5)), "Europe/London")


RULES = (
    blocked.RULE, bypass.RULE, concern.RULE, health.RULE, offsite.RULE, security.RULE,
    silent.RULE, tamper.RULE,
)  # fmt: skip


def test_no_subject_names_a_pupil_device_address_or_domain(world: World) -> None:
    settings = load_notify_settings(world.hub.config)
    dsl = settings.contact("dsl")
    assert dsl is not None
    made = [world.alert(s, rule=rule, key=f"{rule}-{s}") for rule in RULES for s in (2, 4, 5)]
    subjects = [str(alert_email(settings, dsl, a)["Subject"]) for a in made]
    subjects += [str(alert_email(settings, dsl, a, ("oncall",))["Subject"]) for a in made]
    subjects.append(str(digest_email(settings, dsl, made)["Subject"]))
    world.later(0)
    world.later(60)
    world.later(60)
    subjects += [str(m["Subject"]) for m in world.box.messages]
    assert len(world.box.messages) > len(RULES)
    forbidden = (DEVICE, DOMAIN, PUPIL_IP, SITE, "bet", "pupil", "10.0.0")
    for subject in subjects:
        assert not any(word in subject.lower() for word in forbidden), subject
        assert re.fullmatch(r"Hedgerow (alert|daily digest): [a-z0-9 (),]+", subject), subject


# -- the real hub ---------------------------------------------------------------------------


def _out_of_hours_today() -> str:
    """School days that exclude today and tomorrow in London, so the test runs out of hours
    even if it crosses midnight."""
    today = datetime.now(ZoneInfo("Europe/London"))
    day = (today + timedelta(days=2)).strftime("%a")
    return day


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def _link(message: Message) -> str:
    body = _body(message)
    found = re.search(r"Open the alert: (\S+)", body)
    assert found is not None, body
    return found.group(1)


def test_serve_escalates_out_of_hours_across_a_restart_and_the_link_works(tmp_path: Path) -> None:
    smtp_port, web_port = free_port(), free_port()
    root = tmp_path / "hub"
    night = f"""
[escalation]
chain = ["dsl", "deputy_dsl"]
out_of_hours_chain = ["oncall", "deputy_dsl", "head"]
ack_seconds = 10
school_hours = "00:00-24:00"
school_days = "{_out_of_hours_today()}"
timezone = "Europe/London"
"""
    with mosquitto() as broker, smtp_server(smtp_port) as box:
        config = init_hub(root, broker.url, f'listen = "127.0.0.1:{web_port}"\n')
        toml = contacts_toml(smtp_port, night).replace('base_url = "https://hub.school"\n', "")
        config.write_text(config.read_text() + toml)
        check = hub_cli("check", "--config", str(config))
        assert check.returncode == 0, check.stderr
        serve = (sys.executable, "-m", "hub.cli", "serve", "--config", str(config))
        with daemon(*serve, log=root / "serve-1.log"):
            wait_port(web_port, timeout=30)
            done = hub_cli(
                "user", "add", "dsl-1", "--role", "dsl", "--config", str(config),
                "--password-stdin", stdin=PASSWORD + "\n",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            loaded = load_config(config)
            db = Database(loaded.database_url)
            try:
                finding = Finding(
                    rule=blocked.RULE, severity=5, site="school", device=DEVICE,
                    device_class="laptop", group="y7", key="self-harm",
                    summary=f"{DEVICE} tried to open {DOMAIN}", at_ms=int(time.time() * 1000),
                )  # fmt: skip
                with db.transaction():
                    alert = record(db, finding, AlertPolicy(), NotificationOutbox(loaded))
            finally:
                db.close()
            wait_until(lambda: any("oncall@school.example" in r for r in box.recipients), 30)
        first = box.messages[box.recipients.index(["oncall@school.example"])]
        assert sorted(r for rs in box.recipients for r in rs) == [
            "oncall@school.example",
            "tech@school.example",  # not in a chain: told as before
        ]
        # The hub is down past the ack time; the new process carries the chain on.
        db = Database(loaded.database_url)
        try:
            state = escalation.get_escalation(db, alert.id)
        finally:
            db.close()
        assert state is not None and state.told == ("oncall",), state
        time.sleep(max(0.0, state.due_ms / 1000 - time.time()) + 1)
        assert not any("deputy@school.example" in r for r in box.recipients)
        with daemon(*serve, log=root / "serve-2.log") as proc:
            wait_port(web_port, timeout=30)
            wait_until(lambda: any("deputy@school.example" in r for r in box.recipients), 30)
            # The link in the email lands on the alert on the real dashboard, after login.
            link = _link(first)
            assert link == f"http://127.0.0.1:{web_port}/alerts/{alert.id}"
            path = link.removeprefix(f"http://127.0.0.1:{web_port}")
            hub = DashboardHub(config, web_port, root / "serve-2.log", proc)
            anonymous = http(hub, "GET", path)
            assert anonymous.status == 303 and "/login?next=" in anonymous.headers["location"]
            cookie = login_cookie(hub, "dsl-1")
            page = http(hub, "GET", path, cookie=cookie)
            assert page.status == 200 and f"{DEVICE} tried to open {DOMAIN}" in page.body
            # The deputy acknowledges on the dashboard: the head is never told.
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.body)
            assert csrf is not None
            acked = http(
                hub, "POST", f"{path}/acknowledge", cookie=cookie,
                form={"csrf": csrf.group(1), "note": "on it"},
            )  # fmt: skip
            assert acked.status in (200, 303), acked.body
            db = Database(loaded.database_url)
            try:
                wait_until(
                    lambda: (
                        (escalation.get_escalation(db, alert.id) or _none()).status
                        == escalation.ANSWERED
                    ),
                    30,
                )
                trail = alerts.actions(db, alert.id)
            finally:
                db.close()
        assert not any("head@school.example" in r for r in box.recipients)
        actions = [(actor, action, note) for _, actor, action, note in trail]
        assert (
            alerts.HUB_ACTOR,
            "escalated to deputy_dsl",
            "not acknowledged in 10 s (out of hours chain)",
        ) in actions
        assert ("dsl-1", "acknowledged", "on it") in actions
        assert SESSION_COOKIE in cookie


def _none() -> escalation.Escalation:
    return escalation.Escalation(0, 0, 0, (), 0, "none")
