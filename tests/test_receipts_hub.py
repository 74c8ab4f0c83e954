"""Delivery receipts from the hub: a real Mosquitto, the hub service in this process (its real
rule engine), SQLite and PostgreSQL. Receipts are read off the broker by a plain subscriber and
verified with common.receipt, as a device would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.receipt import floor_event, open_receipt
from common.wire import Kind, SigningKey
from common.wire.header import Header
from hub.config import HubConfig
from hub.daemon import HubService
from hub.keys import HubKeys
from hub.store import Database
from hub.store.replay_guard import reset_window
from tests.hub_ingest_fixtures import Publisher, SimDevice, enrol, make_hub, publisher, query
from tests.services import Mosquitto
from tests.test_report_support import Subscriber, subscriber
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_config(request: pytest.FixtureRequest, tmp_path: Path, broker: Mosquitto) -> HubConfig:
    """A fresh hub data directory on the test broker, with SQLite or PostgreSQL."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    return make_hub(tmp_path, broker.url, url)


@contextmanager
def running(config: HubConfig) -> Iterator[HubService]:
    """The hub service with its real rules, started and ready; stopped afterwards."""
    service = HubService(config)
    service.start()
    try:
        assert service.wait_ready(30)
        yield service
    finally:
        service.stop()


def throughs(config: HubConfig, sub: Subscriber, device: SimDevice) -> list[int]:
    """Every receipt for `device` the subscriber got, verified as the device would, in order."""
    key = HubKeys(config.keys_dir).signing.verify_key
    return [
        open_receipt(m.payload, hub_keys=[key], site=device.site, device=device.device).through
        for m in sub.on(f"/{device.device}/receipt")
    ]


def latest(config: HubConfig, sub: Subscriber, device: SimDevice) -> int | None:
    """The last receipt's `through` for `device` (None: none yet)."""
    got = throughs(config, sub, device)
    return got[-1] if got else None


def receipts(hub: HubService, result: str) -> float:
    """hedgerow_hub_receipts_total{result}."""
    sample = hub.metrics.registry.get_sample_value(
        "hedgerow_hub_receipts_total", {"result": result}
    )
    return sample or 0.0


def undecryptable(device: SimDevice, seq: int) -> bytes:
    """An authentic envelope (the device's own signature) whose ciphertext does not open."""
    key = device.hub_key
    header = Header(Kind.SUMMARY, key.suite, device.site, device.device, seq, 1, key.key_id)
    raw = header.encode()
    ciphertext = os.urandom(200)
    return raw + ciphertext + device.signer.sign(raw + ciphertext)


def after_a_round(config: HubConfig, sub: Subscriber, pub: Publisher, marker: SimDevice) -> None:
    """Wait until the receipts round that saw everything sent so far has run: the marker
    device's next report is committed (and hinted) after them, so once its receipt says so,
    that round is over."""
    pub.send(marker.topic(), marker.envelope())
    wait_until(lambda: latest(config, sub, marker) == marker.seq, what="a later receipts round")


def test_receipts_cover_what_is_processed_without_a_gap(
    hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config, "lt-a")
    marker = enrol(hub_config, "lt-marker")
    forger = SimDevice("lt-a", device.hub_key, signer=SigningKey.generate())
    with running(hub_config) as hub, subscriber(broker.url) as sub, publisher(broker.url) as pub:
        second = device.envelope(seq=2)
        for envelope in (device.envelope(seq=1), second, device.envelope(seq=4)):
            pub.send(device.topic(), envelope)
        wait_until(lambda: latest(hub_config, sub, device) == 2, what="through 2")
        after_a_round(hub_config, sub, pub, marker)
        assert latest(hub_config, sub, device) == 2  # 4 is stored, but 3 is missing
        pub.send(device.topic(), device.envelope(seq=3))
        wait_until(lambda: latest(hub_config, sub, device) == 4, what="the gap filled")
        # Authentic, but refused for what their bytes are: sending them again is no use.
        pub.send(device.topic(Kind.EVENT), device.envelope(seq=5))  # a summary on /event
        pub.send(device.topic(), undecryptable(device, 6))
        wait_until(lambda: latest(hub_config, sub, device) == 6, what="refused seqs settled")
        # A forgery says nothing about the device: the receipt waits for the real 7.
        pub.send(device.topic(), forger.envelope(seq=7))
        after_a_round(hub_config, sub, pub, marker)
        assert latest(hub_config, sub, device) == 6
        pub.send(device.topic(), device.envelope(seq=7))
        wait_until(lambda: latest(hub_config, sub, device) == 7, what="the real 7")
        # A re-sent report the hub has is a quiet duplicate: counted, never refused.
        refused = sum(hub.metrics.value("rejected", r) for r in ("replay", "bad_signature"))
        duplicates = hub.metrics.value("duplicate")
        pub.send(device.topic(), second)
        wait_until(lambda: hub.metrics.value("duplicate") == duplicates + 1, what="a duplicate")
        assert sum(hub.metrics.value("rejected", r) for r in ("replay", "bad_signature")) == refused
        # The device declares that it holds nothing unreceipted at or below 19.
        floor = device.envelope(floor_event(19, 1), kind=Kind.EVENT, seq=20)
        pub.send(device.topic(Kind.EVENT), floor)
        wait_until(lambda: latest(hub_config, sub, device) == 20, what="the declared floor")
        assert receipts(hub, "settled") == 2 and receipts(hub, "declared") == 1
        assert receipts(hub, "published") >= len(throughs(hub_config, sub, device))
        got = throughs(hub_config, sub, device)
    assert got == sorted(got)  # never goes down
    assert query(hub_config, "SELECT COUNT(*) FROM alerts WHERE rule = 'security'") == [(0,)]


def test_a_burst_is_receipted_coalesced_and_a_first_gap_says_zero(
    hub_config: HubConfig, broker: Mosquitto
) -> None:
    burst = enrol(hub_config, "lt-burst")
    late = enrol(hub_config, "lt-late")  # its first report is not seq 1 (an unfired will, say)
    with running(hub_config) as hub, subscriber(broker.url) as sub, publisher(broker.url) as pub:
        for _ in range(200):
            pub.send(burst.topic(), burst.envelope(), wait=False)
        pub.send(late.topic(), late.envelope(seq=2))
        wait_until(lambda: latest(hub_config, sub, burst) == 200, timeout=60, what="through 200")
        wait_until(lambda: latest(hub_config, sub, late) == 0, what="a receipt saying 0")
        count = len(throughs(hub_config, sub, burst))
        assert count < 200  # at most one per device per round, not one per report
        assert receipts(hub, "failed") == 0


def test_a_restarted_hub_carries_on_from_the_kept_receipt(
    hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config, "lt-a")
    with subscriber(broker.url) as sub, publisher(broker.url) as pub:
        with running(hub_config):
            pub.send(device.topic(), device.envelope(seq=1))
            pub.send(device.topic(Kind.EVENT), device.envelope(seq=2))  # settled, not stored
            pub.send(device.topic(), device.envelope(seq=3))
            wait_until(lambda: latest(hub_config, sub, device) == 3, what="through 3")
        kept = query(hub_config, "SELECT through FROM receipts WHERE device = 'lt-a'")
        assert kept == [(3,)]
        with running(hub_config):
            pub.send(device.topic(), device.envelope(seq=4))
            # From seq 1 again, the walk would stop at the settled 2 (remembered by no one).
            wait_until(lambda: latest(hub_config, sub, device) == 4, what="through 4")
        got = throughs(hub_config, sub, device)
    assert got == sorted(got)  # the restarted hub never published a lower one


def test_a_reset_window_voids_the_kept_receipt_and_publishes_a_fresh_one(
    hub_config: HubConfig, broker: Mosquitto
) -> None:
    device = enrol(hub_config, "lt-a")
    with running(hub_config), subscriber(broker.url) as sub, publisher(broker.url) as pub:
        for _ in range(5):
            pub.send(device.topic(), device.envelope())
        wait_until(lambda: latest(hub_config, sub, device) == 5, what="through 5")
        db = Database(hub_config.database_url)
        try:
            reset_window(db, device.site, device.device, 1)  # the device numbers from 1 again
        finally:
            db.close()
        # The old receipt would make the renumbered device delete reports the hub never had.
        wait_until(lambda: latest(hub_config, sub, device) == 0, what="a fresh receipt")
        pub.send(device.topic(), device.envelope(seq=1))
        wait_until(lambda: latest(hub_config, sub, device) == 1, what="through 1, anew")
