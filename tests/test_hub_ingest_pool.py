"""Opening in worker processes: the same outcome for every kind of envelope as opening in the
ingest thread, and a worker killed mid-stream loses nothing, duplicates nothing and is
replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from common.wire import Header, Kind, SigningKey
from common.wire.envelope import Duplicate, Opened
from hub.config import HubConfig
from hub.daemon import HubService
from hub.ingest.ahead import jobs_of, merge, screen_batch
from hub.ingest.commit import Committer
from hub.ingest.directory import CachedDirectory
from hub.ingest.opening import open_all
from hub.ingest.pipeline import Opener, Rejected, ToOpen
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.mqtt import Incoming
from hub.store import Database
from hub.store.devices import revoke_device
from hub.store.replay_guard import StoreReplayGuard
from tests.hub_ingest_fixtures import (
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


def _off_schema(device: SimDevice, seq: int) -> bytes:
    """A well signed and sealed envelope whose body is not a summary (seal() refuses those)."""
    to = device.hub_key
    header = Header(Kind.SUMMARY, to.suite, device.site, device.device, seq, 1, to.key_id).encode()
    ciphertext = to.seal(b'{"v":1}', info=header)
    return header + ciphertext + device.signer.sign(header + ciphertext)


def _stream(config: HubConfig) -> list[tuple[str, bytes]]:
    """(topic, payload) of every kind of envelope ingest must tell apart, in order."""
    good = enrol(config, "lt-good")
    other = enrol(config, "lt-other")
    revoked = enrol(config, "lt-revoked")
    db = Database(config.database_url)
    try:
        revoke_device(db, revoked.site, revoked.device, 1)
    finally:
        db.close()
    stranger = SimDevice("lt-stranger", good.hub_key)
    forger = SimDevice("lt-good", good.hub_key, signer=SigningKey.generate())
    first = good.envelope(seq=100_000)
    return [
        (good.topic(), first),
        (good.topic(), first),  # duplicate in the same batch
        (good.topic(), good.envelope(summary(blocked=3), seq=100_000)),  # replay: seq taken
        (good.topic(), good.envelope(seq=5)),  # replay: older than the window
        (good.topic(), forger.envelope(seq=100_001)),  # bad_signature
        (good.topic(), good.envelope(seq=100_001)),  # its seq sent before: verified, then opened
        (stranger.topic(), stranger.envelope()),  # unknown_device
        (revoked.topic(), revoked.envelope()),  # revoked
        (good.topic(), b"x" * (300 * 1024)),  # too_large
        (good.topic(), os.urandom(500)),  # malformed
        (good.topic(Kind.EVENT), good.envelope(seq=100_002)),  # malformed: topic says event
        (good.topic(), other.envelope(seq=1)),  # the header names another device than the topic
        (good.topic(), _off_schema(good, 100_003)),  # schema: signed, then decrypted
        ("hedgerow/v1/cape-primary/lt-good/bogus", good.envelope(seq=100_004)),
        (good.topic(), good.envelope(seq=100_005)),
    ]


def _outcomes(config: HubConfig, stream: list[tuple[str, bytes]], pooled: bool) -> list[str]:
    """Each message's outcome, opened in this thread or as the ingest thread and its opening
    workers do (screened here, the workers' open_all run in this process)."""
    db = Database(config.database_url)
    keys = HubKeys(config.keys_dir)
    try:
        opener = Opener(CachedDirectory(db), keys, StoreReplayGuard(db))
        batch = [Incoming(t, p, i, 1, 0, 0, 0.0) for i, (t, p) in enumerate(stream)]
        if not pooled:
            opener.load_devices(batch)
            outcomes = [opener.classify(m) for m in batch]
        else:
            screened, _ = screen_batch(opener, batch, set())
            opened = merge(screened, open_all(jobs_of(screened), keys, {}))
            outcomes = [opener.classify_opened(m, o) for m, o in zip(batch, opened, strict=True)]
    finally:
        db.close()
    return [
        f"{type(o).__name__}:{o.reason}" if isinstance(o, Rejected) else type(o).__name__
        for o in outcomes
    ]


def test_workers_decide_exactly_as_the_ingest_thread(tmp_path: Path) -> None:
    config = make_hub(tmp_path, "mqtt://127.0.0.1:1", None)
    Database(config.database_url).migrate()
    stream = _stream(config)
    alone = _outcomes(config, stream, pooled=False)
    assert _outcomes(config, stream, pooled=True) == alone
    assert alone == [
        "Accepted",
        "Redelivered",
        "Rejected:replay",
        "Rejected:replay",
        "Rejected:bad_signature",
        "Accepted",
        "Rejected:unknown_device",
        "Rejected:revoked",
        "Rejected:too_large",
        "Rejected:malformed",
        "Rejected:malformed",
        "Rejected:malformed",
        "Rejected:schema",
        "Rejected:malformed",
        "Accepted",
    ]


def test_workers_verify_redeliveries_and_replays_without_decrypting(tmp_path: Path) -> None:
    config = make_hub(tmp_path, "mqtt://127.0.0.1:1", None)
    Database(config.database_url).migrate()
    good = enrol(config, "lt-good")
    stranger = SimDevice("lt-stranger", good.hub_key)
    stored, pending = good.envelope(seq=7), good.envelope(seq=8)

    def message(payload: bytes, device: SimDevice = good) -> Incoming:
        return Incoming(device.topic(), payload, 1, 1, 0, 0, 0.0)

    db = Database(config.database_url)
    keys = HubKeys(config.keys_dir)
    try:
        committer = Committer(
            ack=lambda m: True, metrics=HubMetrics(), rules=None, enroll=None, publish=None
        )
        opener = Opener(CachedDirectory(db), keys, StoreReplayGuard(db))
        committer.commit(db, opener, [message(stored)], with_rules=False)
        opener = Opener(CachedDirectory(db), keys, StoreReplayGuard(db))  # a fresh ingest thread
        _, previous = screen_batch(opener, [message(pending)], set())  # sent, not committed
        batch = [
            message(stored),  # stored in an earlier batch: a redelivery
            message(good.envelope(summary(blocked=2), seq=7)),  # seq taken by another envelope
            message(pending),  # sent in the batch before
            message(good.envelope(seq=9)),  # new
            message(stranger.envelope(), stranger),  # refused before the signature: no job
        ]
        screened, _ = screen_batch(opener, batch, previous)
        assert [type(s).__name__ for s in screened] == ["ToOpen"] * 4 + ["Rejected"]
        assert [s.job[2] for s in screened if isinstance(s, ToOpen)] == [True, True, True, False]
        opened = merge(screened, open_all(jobs_of(screened), keys, {}))
        assert [type(o) for o in opened[:4]] == [Duplicate, Duplicate, Duplicate, Opened]
        outcomes = [opener.classify_opened(m, o) for m, o in zip(batch, opened, strict=True)]
    finally:
        db.close()
    # The batch before never committed here, so its message is new after all: opened here.
    assert [
        f"{type(o).__name__}:{o.reason}" if isinstance(o, Rejected) else type(o).__name__
        for o in outcomes
    ] == ["Redelivered", "Rejected:replay", "Accepted", "Accepted", "Rejected:unknown_device"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_worker_is_replaced_and_nothing_is_lost(
    tmp_path: Path, broker: Mosquitto, request: pytest.FixtureRequest, backend: str
) -> None:
    url = None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    config = make_hub(tmp_path, broker.url, url)
    devices = [enrol(config) for _ in range(4)]
    envelopes = [(d.topic(), d.envelope(summary(blocked=1))) for _ in range(100) for d in devices]
    service = HubService(config, opening_processes=1)
    service.start()
    try:
        assert service.wait_ready(30)
        assert service.worker is not None
        worker = service.worker
        extra: list[bytes] = []  # sent after the replacement, until the new worker takes work
        half = len(envelopes) // 2
        with publisher(broker.url) as pub:
            sending = iter(envelopes[:half])

            def worker_ready() -> bool:
                # Batches are opened in the ingest thread until the worker has loaded the keys.
                pub.send(*next(sending))
                return len(worker.opening_pids) == 1

            wait_until(worker_ready, what="the worker ready")
            (first_pid,) = worker.opening_pids
            for topic, payload in sending:
                pub.send(topic, payload, wait=False)
            wait_until(lambda: report_count(config) >= 60, what="some reports stored")
            os.kill(first_pid, signal.SIGKILL)  # our own grandchild, by PID
            sent = [pub.send(topic, payload, wait=False) for topic, payload in envelopes[half:]]
            for info in sent:
                info.wait_for_publish(60)
        wait_until(lambda: report_count(config) == len(envelopes), timeout=120, what="all stored")
        replaced = service.metrics.registry.get_sample_value
        wait_until(
            lambda: (replaced("hedgerow_hub_opening_workers_replaced_total") or 0) >= 1,
            what="the replacement counted",
        )
        with publisher(broker.url) as pub:

            def replaced_and_ready() -> bool:
                # The replacement takes work once it has loaded the keys: keep reports coming.
                extra.append(devices[0].envelope())
                pub.send(devices[0].topic(), extra[-1])
                return len(worker.opening_pids) == 1 and worker.opening_pids != [first_pid]

            wait_until(replaced_and_ready, what="a new worker taking work")
        total = len(envelopes) + len(extra)
        wait_until(lambda: report_count(config) == total, what="the later reports stored")
    finally:
        service.stop()
    rows = query(config, "SELECT device, seq FROM reports")
    assert len(rows) == len(set(rows)) == len(envelopes) + len(extra)
