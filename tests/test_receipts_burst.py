"""End to end: a broker that drops most of a device's burst loses nothing.

A real Mosquitto that queues at most 5 messages for an offline client, `hedgerow-hub serve` in
a child process, and the device's own Publisher (agent/report). While the hub is down the
device sends 40 reports; the broker acknowledges all 40 (PUBACK) but keeps only 5 for the hub.
Before receipts the device deleted each report at its PUBACK and 35 were gone; now it keeps
them until the hub's signed receipt covers them, and sends again what no receipt covered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.report import Publisher
from common.identity import Identity, MqttCredentials
from common.wire import Kind, SigningKey
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.store import Database
from hub.store.devices import add_device
from tests.hub_ingest_fixtures import SITE, make_hub, query, serving
from tests.services import mosquitto
from tests.waiting import wait_until

DEVICE = "dns-1"
BURST = 40


def heartbeat() -> dict[str, Any]:
    return {"v": 1, "uptime_s": 1, "policy_version": 0, "software": "test"}


def blocked(n: int) -> dict[str, Any]:
    return {"v": 1, "type": "blocked", "at": n, "count": 1, "category": "gambling"}


def enrolled_device(root: Path, hub_dir: Path, database_url: str, broker_url: str) -> Path:
    """A device identity that trusts this hub's keys, registered in the hub's database."""
    keys = HubKeys(hub_dir)
    identity = Identity(
        site=SITE,
        device=DEVICE,
        device_class="sinkhole",
        group="pupils",
        key=SigningKey.generate(),
        hub_key=keys.sealing_key,
        hub_verify_keys=(keys.signing.verify_key,),
        mqtt=MqttCredentials(url=broker_url),
    )
    directory = root / "device"
    identity.save(directory)
    db = Database(database_url)
    try:
        add_device(
            db,
            DeviceInfo(
                site=SITE,
                device=DEVICE,
                device_class="sinkhole",
                group="pupils",
                verify_key=identity.key.public,
                enrolled_ms=int(time.time() * 1000),
            ),
        )
    finally:
        db.close()
    return directory


def stored_events(config: Any) -> list[int]:
    """The `at` of every blocked event stored for the device, sorted (one per stored row)."""
    rows = query(config, "SELECT body FROM reports WHERE device = ? AND kind = 'event'", (DEVICE,))
    docs = [json.loads(body) for (body,) in rows]
    return sorted(d["at"] for d in docs if d["type"] == "blocked")


def test_a_broker_that_drops_most_of_a_burst_still_loses_nothing(tmp_path: Path) -> None:
    with mosquitto(extra_conf="max_queued_messages 5") as broker:
        config = make_hub(tmp_path, broker.url, None)
        device_dir = enrolled_device(tmp_path, config.keys_dir, config.database_url, broker.url)
        with serving(config):
            pass  # the hub's first subscription creates its persistent session at the broker
        publisher = Publisher.open(
            device_dir, tmp_path / "spool", heartbeat,
            resend_after_s=1, min_backoff_s=1, max_backoff_s=1,
        )  # fmt: skip
        publisher.start()
        try:
            for n in range(BURST):
                assert publisher.offer(Kind.EVENT, blocked(n))
            assert publisher.drain(60)  # the broker acknowledged every one of them
            wait_until(
                lambda: b"Outgoing messages are being dropped" in broker.log.read_bytes(),
                what="the broker dropping messages queued for the hub",
            )
            assert publisher.stats().spool_entries == BURST  # PUBACK is not the end of the line
            with serving(config):
                assert publisher.wait_receipted(120), publisher.stats()
                wait_until(lambda: len(stored_events(config)) == BURST, what="every report")
            stats = publisher.stats()
        finally:
            publisher.stop(timeout=2)
        assert stored_events(config) == list(range(BURST))  # each exactly once
        assert stats.resent > 0 and stats.floors_declared >= 1 and stats.receipts_ignored == 0
        # Re-sent copies of what the hub had were quiet duplicates: nothing refused, no alert.
        assert query(config, "SELECT COUNT(*) FROM rejections") == [(0,)]
        assert query(config, "SELECT COUNT(*) FROM alerts WHERE rule = 'security'") == [(0,)]
