"""Ingest end to end: a real Mosquitto, the hub service in this process, SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from common.wire import Kind, SigningKey
from hub.config import HubConfig
from hub.daemon import HubService
from hub.ingest.worker import BatchLimits, IngestWorker
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.model import StoredReport
from hub.mqtt import MqttConnection, report_filter
from hub.store import Database
from hub.store.devices import revoke_device
from hub.store.rejections import rejection_counts
from tests.hub_ingest_fixtures import (
    SITE,
    SimDevice,
    enrol,
    make_hub,
    publisher,
    query,
    report_count,
    summary,
)
from tests.services import Mosquitto
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data directory) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


class RecordingRules:
    """A stand-in rule engine: writes an alert row per stored report, in ingest's transaction."""

    def __init__(self) -> None:
        self.reports: list[StoredReport] = []
        self.rejections: list[tuple[str, str | None, str | None]] = []
        self.ticks = 0

    def evaluate_batch(self, db: Database, reports: Sequence[StoredReport]) -> None:
        for report in reports:
            self.evaluate(db, report)

    def evaluate(self, db: Database, report: StoredReport) -> None:
        self.reports.append(report)
        db.execute(
            "INSERT INTO alerts (rule, dedup_key, severity, site, device, status, first_seen_ms, "
            "last_seen_ms, count, summary, evidence) VALUES (?, ?, 1, ?, ?, 'closed', ?, ?, 1, "
            "'seen', ?)",
            ("test", str(report.id), report.site, report.device, report.received_ms,
             report.received_ms, f"[{report.id}]"),
        )  # fmt: skip

    def on_rejection(
        self, db: Database, reason: str, site: str | None, device: str | None, now_ms: int
    ) -> None:
        self.rejections.append((reason, site, device))

    def tick(self, db: Database, now_ms: int) -> None:
        self.ticks += 1


@pytest.fixture
def hub_config(tmp_path: Path, broker: Mosquitto, database_url: str | None) -> HubConfig:
    """A fresh hub data directory pointing at the test broker and database."""
    return make_hub(tmp_path, broker.url, database_url)


@pytest.fixture
def rules() -> RecordingRules:
    """The stand-in rules engine."""
    return RecordingRules()


@pytest.fixture
def hub(hub_config: HubConfig, rules: RecordingRules) -> Iterator[HubService]:
    """The hub service running in this process (stopped cleanly after the test)."""
    service = HubService(hub_config, rules=rules)
    service.start()
    try:
        assert service.wait_ready(30), "hub did not connect and subscribe"
        yield service
    finally:
        service.stop()


def test_envelopes_are_stored_once_with_dfe_fields_and_rules_run(
    hub: HubService, hub_config: HubConfig, broker: Mosquitto, rules: RecordingRules
) -> None:
    device = enrol(hub_config)
    with publisher(broker.url) as pub:
        for _ in range(20):
            pub.send(device.topic(), device.envelope(summary(blocked=2)))
    wait_until(lambda: report_count(hub_config) == 20, what="20 reports")
    rows = query(hub_config, "SELECT seq, kind, client_ip, client_user FROM reports ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 21))
    assert rows[0][1:] == ("summary", "10.1.2.3", "pupil1")
    blocked = query(hub_config, "SELECT COUNT(*), MIN(category) FROM blocked")
    assert blocked[0] == (40, "gambling")
    seen = query(
        hub_config, "SELECT last_seq, last_seen_ms FROM devices WHERE device = ?", (device.device,)
    )
    assert seen[0][0] == 20 and seen[0][1] is not None
    # The stand-in rules wrote one alert per report inside the same committed transaction.
    assert query(hub_config, "SELECT COUNT(*) FROM alerts")[0][0] == 20
    assert {r.seq for r in rules.reports} == set(range(1, 21))
    assert rules.reports[0].device_class == "pupil-laptop"
    wait_until(lambda: hub.metrics.value("stored") == 20, what="stored counted")


def test_same_bytes_twice_are_acked_and_stored_once(
    hub: HubService, hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config)
    envelope = device.envelope()
    with publisher(broker.url) as pub:
        pub.send(device.topic(), envelope)
        wait_until(lambda: report_count(hub_config) == 1, what="first copy stored")
        pub.send(device.topic(), envelope)
        pub.send(device.topic(), device.envelope())
    wait_until(lambda: report_count(hub_config) == 2, what="the next report")
    wait_until(lambda: hub.metrics.value("duplicate") == 1, what="the duplicate counted")
    assert report_count(hub_config) == 2


def test_bad_messages_are_rejected_by_reason_and_ingest_carries_on(
    hub: HubService, hub_config: HubConfig, broker: Mosquitto, rules: RecordingRules
) -> None:
    good = enrol(hub_config, "lt-good")
    revoked = enrol(hub_config, "lt-revoked")
    db = Database(hub_config.database_url)
    try:
        revoke_device(db, revoked.site, revoked.device, 1)
    finally:
        db.close()
    stranger = SimDevice("lt-stranger", good.hub_key)
    forger = SimDevice("lt-good", good.hub_key, signer=SigningKey.generate())
    with publisher(broker.url) as pub:
        pub.send(good.topic(), good.envelope(seq=100_000))  # far ahead: seq 5 is now too old
        wait_until(lambda: report_count(hub_config) == 1, what="the first good report")
        pub.send(good.topic(), forger.envelope(seq=7))  # bad_signature
        pub.send(stranger.topic(), stranger.envelope())  # unknown_device
        pub.send(revoked.topic(), revoked.envelope())  # revoked
        pub.send(good.topic(), b"x" * (300 * 1024))  # too_large
        pub.send(good.topic(), os.urandom(500))  # malformed (garbage)
        pub.send(good.topic(), good.envelope(seq=5))  # replay: older than the window
        pub.send(good.topic(), good.envelope(summary(blocked=3), seq=100_000))  # replay: seq taken
        pub.send(good.topic(Kind.EVENT), good.envelope(seq=100_001))  # malformed: topic says event
        pub.send("hedgerow/v1/cape-primary/lt-good/bogus", good.envelope())  # malformed: topic
        pub.send(good.topic(), good.envelope(seq=100_002))  # and a good one after all that
    wait_until(lambda: report_count(hub_config) == 2, what="the good report after the bad ones")
    expected = {
        "bad_signature": 1,
        "unknown_device": 1,
        "revoked": 1,
        "too_large": 1,
        "malformed": 3,
        "replay": 2,
    }
    wait_until(
        lambda: rejection_counts_of(hub_config) == expected,
        what=f"rejections {expected} (have {rejection_counts_of(hub_config)})",
    )
    # Metrics are counted just after the commit: wait for them too.
    wait_until(
        lambda: all(hub.metrics.value("rejected", r) == n for r, n in expected.items()),
        what="rejection metrics",
    )
    assert sorted(r[0] for r in rules.rejections) == sorted(
        reason for reason, n in expected.items() for _ in range(n)
    )
    sizes = query(
        hub_config, "SELECT size, site, device FROM rejections WHERE reason = 'too_large'"
    )
    assert sizes == [(300 * 1024, "cape-primary", "lt-good")]
    assert ("revoked", "cape-primary", "lt-revoked") in rules.rejections


def rejection_counts_of(config: HubConfig) -> dict[str, int]:
    """The rejections table's counts by reason."""
    db = Database(config.database_url)
    try:
        return rejection_counts(db)
    finally:
        db.close()


def test_revoked_while_running_is_rejected_as_revoked(
    hub: HubService, hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config)
    with publisher(broker.url) as pub:
        pub.send(device.topic(), device.envelope())
        wait_until(lambda: report_count(hub_config) == 1, what="report before revocation")
        db = Database(hub_config.database_url)
        try:
            assert revoke_device(db, device.site, device.device, 1)
        finally:
            db.close()

        def refused() -> bool:
            pub.send(device.topic(), device.envelope())
            return hub.metrics.value("rejected", "revoked") > 0

        wait_until(refused, what="a rejection as revoked (directory cache expiry)")
    assert report_count(hub_config) >= 1


def test_staff_counts_only_devices_keep_counts_not_names(
    hub: HubService, hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config, "staff-01", device_class="staff-laptop", counts_only=True)
    with publisher(broker.url) as pub:
        pub.send(device.topic(), device.envelope(summary(blocked=2)))
    wait_until(lambda: report_count(hub_config) == 1, what="staff report")
    body = query(hub_config, "SELECT body FROM reports")[0][0]
    assert "bet0.example" not in body and "bbc.co.uk" not in body
    assert '"blocked":2' in body  # the counts stay
    assert query(hub_config, "SELECT name, category, count FROM blocked") == [
        ("", "gambling", 1),
        ("", "gambling", 1),
    ]


def test_messages_published_while_the_hub_is_down_arrive_when_it_starts(
    hub_config: HubConfig, broker: Mosquitto, rules: RecordingRules
) -> None:
    device = enrol(hub_config)
    first = HubService(hub_config, rules=rules)
    first.start()
    try:
        assert first.wait_ready(30)
    finally:
        first.stop()  # the persistent session stays at the broker
    with publisher(broker.url) as pub:
        for _ in range(30):
            pub.send(device.topic(), device.envelope())
    assert report_count(hub_config) == 0
    second = HubService(hub_config, rules=rules)
    second.start()
    try:
        wait_until(lambda: report_count(hub_config) == 30, what="reports queued at the broker")
    finally:
        second.stop()


def test_rules_failure_still_stores_the_report(hub_config: HubConfig, broker: Mosquitto) -> None:
    class BrokenRules(RecordingRules):
        def evaluate(self, db: Database, report: StoredReport) -> None:
            if report.seq == 2:
                raise RuntimeError("a bug in a rule")
            super().evaluate(db, report)

    device = enrol(hub_config)
    service = HubService(hub_config, rules=BrokenRules())
    service.start()
    try:
        assert service.wait_ready(30)
        with publisher(broker.url) as pub:
            for _ in range(3):
                pub.send(device.topic(), device.envelope())
        wait_until(lambda: report_count(hub_config) == 3, what="all three stored")
        assert query(hub_config, "SELECT COUNT(*) FROM alerts")[0][0] == 2
    finally:
        service.stop()


def test_sighup_reload_is_all_or_nothing_and_metrics_are_served(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = make_hub(tmp_path, broker.url, None, metrics="127.0.0.1:0")
    service = HubService(config)  # the real rules engine and notification outbox
    service.start()
    try:
        good = config.path.read_text()
        config.path.write_text(good + "\n[rules\n")  # broken TOML: the old rules stay
        assert service.reload() is False
        config.path.write_text(good)
        assert service.reload() is True
        assert service.metrics_port
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert "hedgerow_hub_queue_depth" in text
        assert "hedgerow_hub_commit_seconds" in text
    finally:
        service.stop()


def test_bad_site_policy_file_is_logged_and_ingest_still_starts(
    hub_config: HubConfig,
    broker: Mosquitto,
    rules: RecordingRules,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy_dir = hub_config.data / "policy"
    policy_dir.mkdir(exist_ok=True)
    (policy_dir / f"{SITE}.toml").write_text("[policy]\nsummary_interval_s = 5\n")
    device = enrol(hub_config)
    service = HubService(hub_config, rules=rules)
    with caplog.at_level(logging.ERROR, logger="hub.daemon"):
        service.start()
    try:
        assert service.wait_ready(30)
        assert "cannot publish policies at start" in caplog.text
        assert "summary_interval_s" in caplog.text  # the message names the key
        with publisher(broker.url) as pub:
            pub.send(device.topic(), device.envelope())
        wait_until(lambda: report_count(hub_config) == 1, what="the report stored")
    finally:
        service.stop()


def test_a_full_queue_holds_the_broker_back_and_loses_nothing(
    hub_config: HubConfig, broker: Mosquitto, rules: RecordingRules
) -> None:
    # The broker may hand over more than Receive Maximum (Mosquitto 2.0 does, when acks come in
    # bursts). A message dropped from a full queue would wait for a reconnect that never comes.
    devices = [enrol(hub_config) for _ in range(3)]
    metrics = HubMetrics()
    connection = MqttConnection(
        hub_config.mqtt, subscriptions=[report_filter(False)], client_id="queue-test"
    )
    worker = IngestWorker(
        hub_config.database_url,
        HubKeys(hub_config.keys_dir),
        ack=connection.ack,
        metrics=metrics,
        rules=rules,
        limits=BatchLimits(max_messages=3, queue_size=2),
    )
    connection.on_message = worker.offer
    worker.start()
    connection.start()
    try:
        assert connection.wait_ready(30)
        with publisher(broker.url) as pub:
            infos = [
                pub.send(d.topic(), d.envelope(), wait=False) for _ in range(40) for d in devices
            ]
            for info in infos:
                info.wait_for_publish(60)
        wait_until(lambda: report_count(hub_config) == 120, timeout=120, what="all 120 stored")
        assert metrics.value("dropped", "stopping") == 0
    finally:
        worker.stop()
        connection.stop()
