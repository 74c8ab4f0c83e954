"""Keys rotated while `serve` runs are loaded, and an authentic envelope sealed to a key the hub
has not loaded yet is held, never acknowledged and dropped, then ingested once the key is
there. Against a real Mosquitto and a real `hedgerow-hub serve`, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.wire import SuiteId
from common.wire.keyfile import opening_key_document, write_json
from common.wire.suites import OpeningKey
from hub.config import HubConfig
from hub.ingest.commit import Committer
from hub.ingest.directory import CachedDirectory
from hub.ingest.holding import openable
from hub.ingest.pipeline import Opener
from hub.keys import HubKeys, add_hpke_key, create_keys
from hub.metrics import HubMetrics
from hub.mqtt import Incoming
from hub.store import Database
from hub.store.held import HeldBounds, held_count
from hub.store.replay_guard import StoreReplayGuard
from tests.hub_ingest_fixtures import (
    ROOT,
    SITE,
    enrol,
    make_hub,
    publisher,
    query,
    serving,
)
from tests.services import Mosquitto, free_port
from tests.waiting import wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data directory) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


def stored_seqs(config: HubConfig, device: str) -> list[int]:
    """The seqs stored for one device, in order."""
    rows = query(
        config, "SELECT seq FROM reports WHERE site = ? AND device = ? ORDER BY seq", (SITE, device)
    )
    return [int(r[0]) for r in rows]


def held(config: HubConfig) -> int:
    """How many envelopes are held."""
    db = Database(config.database_url)
    try:
        return held_count(db)
    finally:
        db.close()


def refused(config: HubConfig) -> int:
    """How many messages were refused, for any reason."""
    return int(query(config, "SELECT COALESCE(SUM(count), 0) FROM rejection_counts")[0][0])


def install_key(config: HubConfig, key: OpeningKey) -> None:
    """Put a key file in DATA/keys as `hedgerow-hub keys rotate` writes one."""
    created = datetime.now(UTC).isoformat(timespec="microseconds")
    path = config.keys_dir / f"hpke-{key.key_id.hex()}.json"
    write_json(path, opening_key_document(key, created), private=True, exclusive=True)


def metric(port: int, result: str, reason: str = "") -> float:
    """One hedgerow_hub_envelopes_total sample from serve's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = f'hedgerow_hub_envelopes_total{{reason="{reason}",result="{result}"}} '
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line[len(wanted) :])
    return 0.0


def test_keys_rotated_while_serving_are_loaded(
    tmp_path: Path, broker: Mosquitto, database_url: str | None
) -> None:
    config = make_hub(tmp_path, broker.url, database_url)
    device = enrol(config)
    with serving(config), publisher(broker.url) as pub:
        pub.send(device.topic(), device.envelope())
        wait_until(lambda: stored_seqs(config, device.device) == [1], what="a report, old key")
        rotated = subprocess.run(
            [sys.executable, "-m", "hub.cli", "keys", "rotate", "--config", str(config.path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "new current HPKE key" in rotated.stdout
        new_key = HubKeys(config.keys_dir).sealing_key
        assert new_key.key_id != device.hub_key.key_id
        old_key, device.hub_key = device.hub_key, new_key  # what policy publish tells it
        pub.send(device.topic(), device.envelope())
        wait_until(lambda: stored_seqs(config, device.device) == [1, 2], what="a report, new key")
        device.hub_key = old_key  # a report sealed offline before the policy came: still opens
        pub.send(device.topic(), device.envelope())
        wait_until(lambda: stored_seqs(config, device.device) == [1, 2, 3], what="old key")
        # The ingest thread notices the new key file on its own too (for the enrolment
        # answers and held envelopes): "reloaded the hub keys from ...: ..., new <id>".
        log = config.path.parent / "serve.log"
        wait_until(lambda: f"new {new_key.key_id.hex()}" in log.read_text(), what="reload log")
    assert refused(config) == 0 and held(config) == 0


def test_an_envelope_for_a_key_not_loaded_is_held_then_ingested_after_sighup(
    tmp_path: Path, broker: Mosquitto, database_url: str | None
) -> None:
    port = free_port()
    config = make_hub(tmp_path, broker.url, database_url, metrics=f"127.0.0.1:{port}")
    device = enrol(config)
    future = OpeningKey.generate(config.suite)  # a key the hub does not have yet
    with serving(config) as proc, publisher(broker.url) as pub:
        pub.send(device.topic(), device.envelope())
        device.hub_key = future.public_key
        pub.send(device.topic(), device.envelope())
        pub.send(device.topic(), device.envelope())
        wait_until(lambda: held(config) == 2, what="two envelopes held")
        wait_until(lambda: metric(port, "held", "wrong_key") == 2, what="held counted")
        assert stored_seqs(config, device.device) == [1]
        assert refused(config) == 0  # held, not refused as wrong_key
        install_key(config, future)
        proc.send_signal(signal.SIGHUP)  # our own child, by PID
        wait_until(lambda: stored_seqs(config, device.device) == [1, 2, 3], what="the held reports")
        wait_until(lambda: metric(port, "released") == 2, what="released counted")
        assert held(config) == 0
        assert metric(port, "stored") == 3
    log = (config.path.parent / "serve.log").read_text()
    assert "opened and ingested 2 held envelope(s)" in log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_held_envelopes_are_bounded_and_released_by_a_reload(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    url = None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    config = make_hub(tmp_path, "mqtt://127.0.0.1:1", url)
    db = Database(config.database_url)
    try:
        db.migrate()
        one, two = enrol(config, "lt-one"), enrol(config, "lt-two")
        future = OpeningKey.generate(config.suite)
        one.hub_key = two.hub_key = future.public_key
        metrics = HubMetrics()
        acked: list[Incoming] = []
        keys = HubKeys(config.keys_dir)

        def ack(message: Incoming) -> bool:
            acked.append(message)
            return True

        committer = Committer(
            ack=ack,
            metrics=metrics,
            rules=None,
            enroll=None,
            publish=None,
            held_bounds=HeldBounds(envelopes=3, bytes=1 << 20, per_device=2),
        )
        opener = Opener(CachedDirectory(db), keys, StoreReplayGuard(db))
        batch = [
            Incoming(d.topic(), d.envelope(), i, 1, 0, 1_000 + i, 0.0)
            for i, d in enumerate([one, one, one, two, two])
        ]
        committer.commit(db, opener, batch, with_rules=False)
        assert len(acked) == 5  # held or refused, every one is acknowledged
        held_rows = db.execute("SELECT device, seq, received_ms FROM held_envelopes ORDER BY id")
        assert held_rows == [("lt-one", 1, 1_000), ("lt-one", 2, 1_001), ("lt-two", 1, 1_003)]
        assert metrics.value("held", "wrong_key") == 3
        assert metrics.value("dropped", "held_full") == 2  # per device, then in all
        counts = db.execute("SELECT device, reason, count FROM rejection_counts ORDER BY device")
        assert counts == [("lt-one", "wrong_key", 1), ("lt-two", "wrong_key", 1)]
        assert openable(db, keys, 100) == ([], [])  # the key is not loaded: nothing to open
        install_key(config, future)
        assert keys.reload()
        messages, ids = openable(db, keys, 100)
        assert [m.received_ms for m in messages] == [1_000, 1_001, 1_003]
        committer.commit(db, opener, messages, with_rules=False, released=ids)
        assert held_count(db) == 0
        assert metrics.value("released") == 3 and metrics.value("stored") == 3
        rows = db.execute("SELECT device, seq, received_ms FROM reports ORDER BY id")
        assert rows == held_rows  # stored as they arrived
    finally:
        db.close()


def test_keys_reload_all_or_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "keys"
    create_keys(directory, SuiteId.X25519)
    keys = HubKeys(directory)
    first = keys.current
    assert keys.refresh(0.0) is False and keys.generation == 0  # nothing changed
    added = add_hpke_key(directory, first.suite)
    assert keys.opening_key(added.key_id) is not None  # a miss looks at the directory
    assert keys.current.key_id == added.key_id and keys.generation == 1
    assert keys.opening_key(first.key_id) is not None  # rotated-out keys still open
    (directory / "hpke-broken.json").write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="hub.keys"):
        assert keys.reload() is False
    assert "keeping those in force" in caplog.text
    assert keys.current.key_id == added.key_id and keys.generation == 1
    assert keys.opening_key(b"\x00" * 8) is None  # an unknown id, rate-limited look
