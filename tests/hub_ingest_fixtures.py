"""Helpers for hub ingest tests and the bench: a hub data directory, simulated devices enrolled
straight into the database, a QoS 1 publisher, and `hedgerow-hub serve` in a child process."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from common.wire import Kind, SealingKey, SigningKey, seal
from common.wire.topics import up
from hub.config import HubConfig, load_config
from hub.datadir import init_data_dir
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.store import Database
from hub.store.devices import add_device
from tests.services import stop_process
from tests.waiting import wait_until

SITE = "cape-primary"
_ids = itertools.count(1)


def summary(blocked: int = 1, user: str | None = "pupil1", n: int = 0) -> dict[str, Any]:
    """A valid summary document; `n` varies it so each body differs."""
    client: dict[str, Any] = {"ip": "10.1.2.3", "group": "pupils"}
    if user:
        client["user"] = user
    return {
        "v": 1,
        "source": "dns",
        "start": 1_700_000_000_000 + n,
        "end": 1_700_000_300_000 + n,
        "client": client,
        "counts": {"blocked": blocked, "resolved": 40 + n},
        "categories": {"gambling": blocked},
        "blocked": [
            {"name": f"bet{i}.example", "category": "gambling", "count": 1} for i in range(blocked)
        ],
        "top_allowed": [{"domain": "bbc.co.uk", "count": 30}],
        "first_seen": 1_700_000_001_000,
        "last_seen": 1_700_000_299_000,
    }


ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SimDevice:
    """A device that seals reports to the hub, numbering them itself."""

    device: str
    hub_key: SealingKey
    signer: SigningKey = field(default_factory=SigningKey.generate)
    site: str = SITE
    seq: int = 0

    def envelope(
        self,
        doc: dict[str, Any] | None = None,
        *,
        kind: Kind = Kind.SUMMARY,
        seq: int | None = None,
        time_ms: int | None = None,
    ) -> bytes:
        """Seal the next report (or the one with `seq`), stamped now (or at `time_ms`)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        return seal(
            kind,
            doc if doc is not None else summary(n=seq),
            site=self.site,
            device=self.device,
            seq=seq,
            time_ms=int(time.time() * 1000) if time_ms is None else time_ms,
            to=self.hub_key,
            signer=self.signer,
        )

    def topic(self, kind: Kind = Kind.SUMMARY) -> str:
        """Where this device publishes."""
        return up(self.site, self.device, kind)

    def info(self, device_class: str = "pupil-laptop", counts_only: bool = False) -> DeviceInfo:
        """The devices-table row for it."""
        return DeviceInfo(
            site=self.site,
            device=self.device,
            device_class=device_class,
            group="pupils",
            verify_key=self.signer.public,
            enrolled_ms=int(time.time() * 1000),
            counts_only=counts_only,
        )


def make_hub(root: Path, broker_url: str, database_url: str | None, metrics: str = "") -> HubConfig:
    """A fresh data directory (keys generated here, never committed) and its config."""
    path = init_data_dir(root / "hub", SITE, mqtt_url=broker_url, database_url=database_url)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f'\n[metrics]\nlisten = "{metrics}"\n')
        handle.write('\n[notify]\nfrom = "hedgerow@school.example"\n')
    return load_config(path)


def enrol(
    config: HubConfig,
    name: str | None = None,
    *,
    device_class: str = "pupil-laptop",
    counts_only: bool = False,
) -> SimDevice:
    """A new simulated device, registered straight in the database."""
    device = SimDevice(name or f"lt-{next(_ids):04d}", HubKeys(config.keys_dir).sealing_key)
    db = Database(config.database_url)
    try:
        add_device(db, device.info(device_class, counts_only))
    finally:
        db.close()
    return device


@contextmanager
def publisher(broker_url: str, client_id: str = "test-publisher") -> Iterator[Publisher]:
    """A connected QoS 1 publisher (disconnected and joined on exit)."""
    pub = Publisher(broker_url, client_id)
    try:
        yield pub
    finally:
        pub.close()


class Publisher:
    """Publishes QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, broker_url: str, client_id: str) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, wait: bool = True) -> paho.MQTTMessageInfo:
        """Publish one message (and wait until the broker has it)."""
        info = self.client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(30)
        return info

    def close(self) -> None:
        """Disconnect and join the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def query(config: HubConfig, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on the hub's database with a short-lived connection."""
    db = Database(config.database_url)
    try:
        return db.execute(sql, params)
    finally:
        db.close()


def report_count(config: HubConfig) -> int:
    """How many reports are stored."""
    return int(query(config, "SELECT COUNT(*) FROM reports")[0][0])


@contextmanager
def serving(
    config: HubConfig, ready: str = "hedgerow-hub serving", poll: float = 0.1
) -> Iterator[subprocess.Popen[bytes]]:
    """`hedgerow-hub serve` on this config (logging to serve.log beside it) from the moment
    its log says `ready` until the block ends; stopped by its PID."""
    log = config.path.parent / "serve.log"
    mark = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(config.path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:

        def started() -> bool:
            return ready in log.read_bytes()[mark:].decode(errors="replace")

        with contextlib.suppress(AssertionError):  # reported below, with the log
            wait_until(lambda: started() or proc.poll() is not None, 60, poll, f"serve: {ready!r}")
        if not started():
            raise AssertionError(f"serve: no {ready!r}: {log.read_text()[-2000:]}")
        yield proc
    finally:
        stop_process(proc)
