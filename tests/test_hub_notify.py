"""Notifications through a real SMTP server and a real HTTP receiver, with an injected clock."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.alerts import AlertPolicy, Finding, record
from hub.errors import ConfigError
from hub.model import Alert
from hub.notify.outbox import NotificationOutbox, next_digest_ms
from hub.notify.sender import NotificationSender
from hub.notify.settings import load_notify_settings
from tests.enroll_fixtures import SITE, T0, Hub, make_hub
from tests.notify_fixtures import http_receiver, smtp_server
from tests.services import free_port
from tests.waiting import wait_until

DEVICE = "lt-042"
DOMAIN = "bet.example"


def notify_toml(smtp_port: int, hook_url: str = "http://127.0.0.1:9/hook", extra: str = "") -> str:
    return f"""
[notify]
from = "hedgerow@school.example"
base_url = "https://hub.school"
retry_base_s = 60
{extra}
[notify.smtp]
host = "127.0.0.1"
port = {smtp_port}
starttls = false
timeout_s = 5

[contacts.dsl]
name = "Designated Safeguarding Lead"
email = "dsl@school.example"
min_severity = 2

[contacts.head]
email = "head@school.example"
min_severity = 5

[contacts.hook]
webhook = "{hook_url}"
min_severity = 4
"""


class World:
    """A hub with contacts, an outbox, a sender and a clock the test moves."""

    def __init__(self, tmp_path: Path, smtp_port: int, **kw: str) -> None:
        self.hub: Hub = make_hub(tmp_path, extra_toml=notify_toml(smtp_port, **kw))
        self.now = T0
        self.outbox = NotificationOutbox(self.hub.config, clock=lambda: self.now)
        self.sender = NotificationSender(
            self.hub.config, self.hub.config.database_url, clock=lambda: self.now, poll_s=0.05
        )
        self.db = self.hub.db()

    def alert(self, severity: int, key: str = "gambling") -> Alert:
        finding = Finding(
            rule="blocked_content",
            severity=severity,
            site=SITE,
            device=DEVICE,
            device_class="pupil-laptop",
            group="pupils",
            key=key,
            summary=f"{DEVICE} was refused {DOMAIN} 12 times",
            at_ms=self.now,
        )
        with self.db.transaction():
            return record(self.db, finding, AlertPolicy(), self.outbox)

    def send(self) -> int:
        return self.sender.run_once(self.db)

    def rows(self) -> list[tuple[str, str, str, int]]:
        return [
            (str(r[0]), str(r[1]), str(r[2]), int(r[3]))
            for r in self.db.execute(
                "SELECT channel, contact, status, attempts FROM notifications ORDER BY id"
            )
        ]

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def world(tmp_path: Path, smtp_port: int) -> Iterator[World]:
    w = World(tmp_path, smtp_port)
    yield w
    w.close()


def test_severe_alert_is_emailed_at_once(world: World, smtp_port: int) -> None:
    with smtp_server(smtp_port) as box:
        alert = world.alert(5)
        assert world.send() == 2  # dsl and head; the webhook (no receiver) waits for a retry
    recipients = sorted(r[0] for r in box.recipients)
    assert recipients == ["dsl@school.example", "head@school.example"]
    for message in box.messages:
        subject = str(message["Subject"])
        assert subject == "Hedgerow alert: severity 5 (blocked content)"
        for secret in (DEVICE, SITE, DOMAIN, "pupil"):
            assert secret not in subject
        body = message.get_payload()
        assert f"https://hub.school/alerts/{alert.id}" in str(body)
        assert DOMAIN in str(body)


def test_less_severe_alerts_wait_for_the_daily_digest(world: World, smtp_port: int) -> None:
    with smtp_server(smtp_port) as box:
        first = world.alert(3, "gambling")
        second = world.alert(2, "games")
        assert world.send() == 0 and box.messages == []
        world.now = next_digest_ms(T0, 7)
        assert world.send() == 2
    assert len(box.messages) == 1 and box.recipients == [["dsl@school.example"]]
    message = box.messages[0]
    assert str(message["Subject"]) == "Hedgerow daily digest: 2 alert(s)"
    body = str(message.get_payload())
    for alert in (first, second):
        assert f"https://hub.school/alerts/{alert.id}" in body
    assert world.rows() == [("digest", "dsl", "sent", 1), ("digest", "dsl", "sent", 1)]


def test_smtp_down_then_up_nothing_is_lost(
    world: World, smtp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    world.alert(4)
    with caplog.at_level(logging.WARNING, logger="hub.notify.sender"):
        assert world.send() == 0  # no SMTP server yet
    assert "failed, attempt 1" in caplog.text
    assert ("email", "dsl", "pending", 1) in world.rows()
    error = world.db.execute("SELECT last_error FROM notifications WHERE contact = 'dsl'")
    assert "SMTP 127.0.0.1" in error[0][0]
    with smtp_server(smtp_port) as box:
        assert world.send() == 0  # not due again yet: backoff
        world.now += 60_000
        assert world.send() == 1
    assert box.recipients == [["dsl@school.example"]]
    assert ("email", "dsl", "sent", 2) in world.rows()


def test_gives_up_loudly_after_max_attempts(
    tmp_path: Path, smtp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(tmp_path, smtp_port, extra="max_attempts = 2")
    try:
        w.alert(4)
        with caplog.at_level(logging.WARNING):
            w.send()
            w.now += 60_000
            w.send()
        assert ("email", "dsl", "failed", 2) in w.rows()
        assert any(
            r.levelno == logging.ERROR and "FAILED for good" in r.message for r in caplog.records
        )
    finally:
        w.close()


def test_escalation_to_severe_replaces_the_digest_line(world: World, smtp_port: int) -> None:
    with smtp_server(smtp_port) as box:
        world.alert(3)
        world.alert(4)  # same key: the open alert escalates
        world.send()
    assert box.recipients == [["dsl@school.example"]]
    assert ("digest", "dsl", "superseded", 0) in world.rows()
    assert "severity 4" in str(box.messages[0]["Subject"])


def test_webhook_delivery_and_retry(tmp_path: Path, smtp_port: int) -> None:
    with http_receiver([500]) as receiver, smtp_server(smtp_port):
        w = World(tmp_path, smtp_port, hook_url=receiver.url)
        try:
            alert = w.alert(4)
            w.send()
            assert ("webhook", "hook", "pending", 1) in w.rows() and receiver.bodies == []
            w.now += 60_000
            w.send()
            assert ("webhook", "hook", "sent", 2) in w.rows()
            w.alert(5)  # escalation
            w.send()
        finally:
            w.close()
    first, second = receiver.bodies
    assert first["event"] == "alert.new" and second["event"] == "alert.escalated"
    assert first["id"] == alert.id and first["severity"] == 4 and second["severity"] == 5
    assert first["url"] == f"https://hub.school/alerts/{alert.id}"
    assert set(alert.to_json()) <= set(first)


def test_sender_thread_delivers(world: World, smtp_port: int) -> None:
    with smtp_server(smtp_port) as box:
        world.alert(5)
        world.sender.start()
        try:
            wait_until(lambda: len(box.messages) >= 2, 20, what="both messages delivered")
        finally:
            world.sender.stop()
    assert len(box.messages) == 2


@pytest.mark.parametrize(
    "toml",
    [
        '[contacts.a]\nname = "nobody to reach"\n',
        '[contacts.a]\nwebhook = "http://hooks.example/x"\n',
        '[contacts.a]\nemail = "dsl@school.example"\n',  # no [notify.smtp]
        '[contacts.a]\nemail = "not an address"\n[notify.smtp]\nhost = "x"\n',
        '[notify]\ncolour = "red"\n',
    ],
)
def test_notify_settings_are_strict(tmp_path: Path, toml: str) -> None:
    hub = make_hub(tmp_path, extra_toml=toml)
    with pytest.raises(ConfigError):
        load_notify_settings(hub.config)


def test_notify_cli_lists_and_retries_failed(
    tmp_path: Path, smtp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from hub.cli import main

    w = World(tmp_path, smtp_port, extra="max_attempts = 1")
    try:
        w.alert(4)
        w.send()  # no SMTP server: fails for good at once
        config = str(w.hub.config.path)
        assert main(["notify", "list", "--config", config]) == 0
        out = capsys.readouterr().out
        assert "failed" in out and "SMTP 127.0.0.1" in out
        assert main(["notify", "retry", "--config", config]) == 0
        assert "2 notification(s)" in capsys.readouterr().out  # email and webhook
        w.now = int(time.time() * 1000)
        with smtp_server(smtp_port) as box:
            w.send()
            assert main(["notify", "test", "--config", config, "--contact", "dsl"]) == 0
        assert len(box.messages) == 2
    finally:
        w.close()
