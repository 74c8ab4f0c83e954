"""The key guarantee: a hub killed with SIGKILL at any instant loses nothing and stores nothing
twice (persistent session + ack after commit + unique (site, device, seq))."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.hub_ingest_fixtures import (
    enrol,
    make_hub,
    publisher,
    query,
    report_count,
    serving,
    summary,
)
from tests.services import Mosquitto
from tests.waiting import wait_until

N = 600


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, broker: Mosquitto, request: pytest.FixtureRequest, backend: str
) -> None:
    url = None if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    config = make_hub(tmp_path, broker.url, url)
    devices = [enrol(config) for _ in range(6)]
    sent = threading.Event()
    killed = threading.Event()
    envelopes = [
        (d.topic(), d.envelope(summary(blocked=0)))
        for _ in range(N // len(devices))
        for d in devices
    ]

    def publish_all() -> None:
        # The first half streams while the hub works; the second half waits for the kill, so
        # however fast the hub is, it cannot have stored everything before it dies (and the
        # broker must keep the rest in the hub's persistent session).
        with publisher(broker.url) as pub:
            half = len(envelopes) // 2
            first = [pub.send(topic, payload, wait=False) for topic, payload in envelopes[:half]]
            for info in first:
                info.wait_for_publish(60)
            if not killed.wait(120):
                return
            rest = [pub.send(topic, payload, wait=False) for topic, payload in envelopes[half:]]
            for info in rest:
                info.wait_for_publish(60)
        sent.set()

    with serving(config) as first:
        thread = threading.Thread(target=publish_all)
        thread.start()
        try:
            wait_until(
                lambda: report_count(config) >= N // 10, timeout=60, what="some reports stored"
            )
            first.kill()  # SIGKILL, by PID: mid-batch, mid-commit, mid-ack: whatever it was doing
            first.wait(30)
            killed.set()
        finally:
            killed.set()
            thread.join(120)
    assert sent.is_set(), "publisher did not finish"
    stored_before_restart = report_count(config)
    assert stored_before_restart < N, "the kill came too late to test anything"
    with serving(config):
        wait_until(lambda: report_count(config) >= N, timeout=120, what=f"all {N} reports")
    rows = query(config, "SELECT device, seq FROM reports")
    assert len(rows) == N
    assert len(set(rows)) == N
    for d in devices:
        seqs = sorted(seq for device, seq in rows if device == d.device)
        assert seqs == list(range(1, N // len(devices) + 1))
