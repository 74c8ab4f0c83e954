"""The Publisher against a real Mosquitto: sealed delivery, outages, restarts, will, drops."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.report import Publisher
from agent.report.errors import LinkError
from agent.report.mqtt import BrokerAddress
from agent.report.spool import Spool
from common.wire import Duplicate, Kind, open_envelope
from tests.services import Mosquitto
from tests.test_report_support import Device, HubSide, Received, TcpProxy, make_device, subscriber
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def heartbeat() -> dict[str, Any]:
    """The base heartbeat document the publisher seals for its will and clean stop."""
    return {"v": 1, "uptime_s": 0, "policy_version": 0, "software": "test"}


def event(n: int) -> dict[str, Any]:
    """A small valid event document, numbered."""
    return {"v": 1, "type": "blocked", "at": n, "count": n}


@contextmanager
def running(device: Device, spool: Path, **options: Any) -> Iterator[Publisher]:
    """A started Publisher, stopped afterwards."""
    options.setdefault("min_backoff_s", 1)
    options.setdefault("max_backoff_s", 1)
    publisher = Publisher.open(device.directory, spool, heartbeat, **options)
    publisher.start()
    try:
        yield publisher
    finally:
        publisher.stop(timeout=2.0)


def opened_in_order(device: Device, messages: list[Received]) -> list[dict[str, Any]]:
    """Open every message through the hub's pipeline; exact redeliveries are skipped."""
    hub = HubSide(device)
    out = []
    for message in messages:
        result = open_envelope(message.payload, devices=hub, keyring=hub, replay=hub)
        if isinstance(result, Duplicate):
            continue
        hub.replay.accept(result.header, result.digest)
        out.append({"seq": result.header.seq, "kind": result.header.kind, **result.payload})
    return out


def test_reports_arrive_sealed_and_open_at_the_hub(tmp_path: Path, broker: Mosquitto) -> None:
    device = make_device(tmp_path, broker.url)
    summary = {
        "v": 1,
        "source": "dns",
        "start": 0,
        "end": 60_000,
        "client": {"ip": "10.0.0.5", "group": "pupils"},
        "counts": {"resolved": 3},
        "categories": {},
        "blocked": [],
        "first_seen": 1,
        "last_seen": 2,
    }
    with subscriber(broker.url) as sub:
        with running(device, tmp_path / "spool") as publisher:
            assert publisher.offer(Kind.SUMMARY, summary)
            assert publisher.offer(Kind.EVENT, event(1))
            assert publisher.drain(20)
            stats = publisher.stats()
            # Acknowledged by the broker, but kept until a hub's receipt covers them.
            assert (stats.delivered, stats.spool_entries, stats.spooled) == (2, 2, 2)
        sub.publish("hedgerow/v1/test-school/pi-1/heartbeat", b"marker")
        sub.wait_for(lambda m: any(x.payload == b"marker" for x in m))
        opened = opened_in_order(device, [m for m in sub.messages if m.payload != b"marker"])
    assert [m.topic for m in sub.messages][:2] == [
        "hedgerow/v1/test-school/pi-1/summary",
        "hedgerow/v1/test-school/pi-1/event",
    ]
    assert opened[0]["client"] == {"ip": "10.0.0.5", "group": "pupils"}
    assert opened[1]["count"] == 1
    # A clean stop sends a sealed clean_stop=true heartbeat, and the will never fires.
    beats = [o for o in opened if o["kind"] is Kind.HEARTBEAT]
    assert [b["clean_stop"] for b in beats] == [True]
    assert [o["seq"] for o in opened] == sorted(o["seq"] for o in opened)


def test_outage_spools_then_delivers_in_order(tmp_path: Path, broker: Mosquitto) -> None:
    device = make_device(tmp_path, broker.url)
    with (
        subscriber(broker.url, persistent=True) as sub,
        running(device, tmp_path / "spool") as publisher,
    ):
        assert publisher.offer(Kind.EVENT, event(0))
        assert publisher.drain(20)
        broker.stop()
        wait_until(lambda: not publisher.stats().connected)
        for n in range(1, 21):
            assert publisher.offer(Kind.EVENT, event(n))
        wait_until(lambda: publisher.stats().spooled == 21)
        assert publisher.stats().spool_entries == 21  # event 0 too: no hub receipted it
        broker.start()
        assert publisher.drain(30)
        sub.wait_for(lambda m: len(opened_events(device, m)) == 21, timeout=30)
        got = opened_events(device, sub.messages)
    assert [o["count"] for o in got] == list(range(21))
    assert publisher.stats().delivered >= 21


def test_after_an_outage_urgent_reports_arrive_before_the_routine_backlog(
    tmp_path: Path, broker: Mosquitto
) -> None:
    device = make_device(tmp_path, broker.url)
    with (
        subscriber(broker.url, persistent=True) as sub,
        running(device, tmp_path / "spool", window=4) as publisher,
    ):
        broker.stop()
        wait_until(lambda: not publisher.stats().connected)
        for n in range(1, 31):  # a day's routine reports...
            assert publisher.offer(Kind.EVENT, event(n))
        wait_until(lambda: publisher.stats().spooled == 30)
        assert publisher.offer(Kind.EVENT, event(100), urgent=True)  # ...then a concern
        wait_until(lambda: publisher.stats().spooled == 31)
        broker.start()
        sub.wait_for(lambda m: len(opened_events(device, m)) == 31, timeout=30)
        got = [o["count"] for o in opened_events(device, sub.messages)]
    assert got[0] == 100  # first, though it was sealed last
    assert got[1:] == list(range(1, 31))  # the rest still in order


def opened_events(device: Device, messages: list[Received]) -> list[dict[str, Any]]:
    """The distinct events among `messages`, opened, in arrival order."""
    return [o for o in opened_in_order(device, list(messages)) if o["kind"] is Kind.EVENT]


def test_restarted_publisher_delivers_what_the_old_one_spooled(
    tmp_path: Path, broker: Mosquitto
) -> None:
    device = make_device(tmp_path, broker.url)
    broker.stop()
    old = Publisher.open(device.directory, tmp_path / "spool", heartbeat)
    old.start()
    for n in range(5):
        assert old.offer(Kind.EVENT, event(n))
    old.stop(timeout=0.2)  # cannot deliver: everything stays spooled, with the clean stop
    assert old.stats().spool_entries == 6
    broker.start()
    with subscriber(broker.url) as sub:
        with running(device, tmp_path / "spool") as new:
            assert new.drain(20)
            assert new.stats().delivered == 6
        sub.wait_for(lambda m: len(opened_in_order(device, m)) >= 7)
        opened = opened_in_order(device, sub.messages)
    kinds = [(o["kind"], o.get("count", o.get("clean_stop"))) for o in opened]
    assert kinds[:6] == [(Kind.EVENT, n) for n in range(5)] + [(Kind.HEARTBEAT, True)]
    assert [o["seq"] for o in opened] == sorted(o["seq"] for o in opened)


@pytest.mark.parametrize("will_delay_s", [0, 1])
def test_last_will_reaches_the_broker_when_the_agent_is_killed(
    tmp_path: Path, broker: Mosquitto, will_delay_s: int
) -> None:
    device = make_device(tmp_path, broker.url)
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from agent.report import Publisher
        p = Publisher.open(
            {str(device.directory)!r}, {str(tmp_path / "spool")!r},
            lambda: {{"v": 1, "uptime_s": 5, "policy_version": 0}},
            will_delay_s={will_delay_s},
        )
        p.start()
        while not p.stats().connected:
            time.sleep(0.02)
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    with subscriber(broker.url) as sub:
        child = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
        finally:
            child.kill()  # SIGKILL, by PID: no clean stop
            child.communicate(timeout=30)
        sub.wait_for(lambda m: any(x.topic.endswith("/heartbeat") for x in m))
        (will,) = sub.on("/heartbeat")
    opened = device.open(will.payload, Kind.HEARTBEAT)
    assert opened.payload["clean_stop"] is False
    assert opened.payload["uptime_s"] == 5
    assert (opened.header.site, opened.header.device) == ("test-school", "pi-1")


def test_full_queue_drops_and_counts_and_keeps_the_rest(tmp_path: Path, broker: Mosquitto) -> None:
    device = make_device(tmp_path, broker.url)
    publisher = Publisher.open(device.directory, tmp_path / "spool", heartbeat, queue_size=3)
    assert [publisher.offer(Kind.EVENT, event(n)) for n in range(5)] == [True] * 3 + [False] * 2
    stats = publisher.stats()
    assert (stats.enqueued, stats.dropped_queue_full) == (3, 2)
    publisher.start()
    try:
        assert publisher.drain(20)
        assert publisher.stats().delivered == 3
    finally:
        publisher.stop(timeout=2)
    assert not publisher.offer(Kind.EVENT, event(9))
    assert publisher.stats().dropped_after_stop == 1


def test_a_document_that_breaks_its_schema_is_counted_not_fatal(
    tmp_path: Path, broker: Mosquitto
) -> None:
    device = make_device(tmp_path, broker.url)
    with running(device, tmp_path / "spool") as publisher:
        assert publisher.offer(Kind.EVENT, {"v": 1, "type": "blocked"})  # no "at"
        assert publisher.offer(Kind.EVENT, event(1))
        assert publisher.drain(20)
        stats = publisher.stats()
    assert (stats.invalid, stats.delivered) == (1, 1)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884, False)),
        ("mqtt://localhost", BrokerAddress("localhost", 1883, False)),
        ("mqtts://[::1]", BrokerAddress("::1", 8883, True)),
    ],
)
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert BrokerAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1", "mqtt://", "mqtt://h:notaport", "mqtt://h/path", "127.0.0.1"]
)
def test_bad_broker_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(LinkError, match="broker URL"):
        BrokerAddress.parse(url)


@pytest.mark.parametrize(("will_delay_s", "will_fires"), [(0, True), (30, False)])
def test_a_network_blip_fires_the_will_only_without_a_will_delay(
    tmp_path: Path, broker: Mosquitto, will_delay_s: int, will_fires: bool
) -> None:
    proxy = TcpProxy(broker.port)
    try:
        device = make_device(tmp_path, proxy.url)
        with (
            subscriber(broker.url) as sub,
            running(device, tmp_path / "spool", will_delay_s=will_delay_s) as publisher,
        ):
            assert publisher.offer(Kind.EVENT, event(0))
            assert publisher.drain(20)
            proxy.cut()
            wait_until(lambda: not publisher.stats().connected)
            wait_until(lambda: publisher.stats().connected)  # reconnected through the proxy
            assert publisher.offer(Kind.EVENT, event(1))
            assert publisher.drain(20)
            sub.publish("hedgerow/v1/test-school/pi-1/heartbeat", b"marker")
            sub.wait_for(lambda m: any(x.payload == b"marker" for x in m))
            before_marker = sub.messages[: [m.payload for m in sub.messages].index(b"marker")]
        opened = opened_in_order(device, before_marker)
    finally:
        proxy.close()
    wills = [o for o in opened if o["kind"] is Kind.HEARTBEAT and o["clean_stop"] is False]
    assert len(wills) == (1 if will_fires else 0)
    assert [o["count"] for o in opened if o["kind"] is Kind.EVENT] == [0, 1]


def test_full_spool_evicts_the_oldest_routine_reports_and_reports_it(tmp_path: Path) -> None:
    device = make_device(tmp_path, "mqtt://127.0.0.1:1")  # nothing listens: all goes to the spool
    probe = Publisher.open(device.directory, tmp_path / "probe", heartbeat)
    probe.start()
    probe.offer(Kind.EVENT, event(1))
    wait_until(lambda: probe.stats().spooled == 1)
    probe.stop(timeout=0)
    one = probe.stats().spool_bytes // 2  # the event and the clean-stop heartbeat, about equal
    publisher = Publisher.open(
        device.directory, tmp_path / "spool", heartbeat, max_spool_bytes=int(one * 2.5)
    )
    publisher.start()
    try:
        for n in range(5):
            assert publisher.offer(Kind.EVENT, event(n))  # the queue takes them all
        wait_until(lambda: publisher.stats().spooled >= 5)
    finally:
        publisher.stop(timeout=0)
    stats = publisher.stats()
    spool = Spool(tmp_path / "spool", 1 << 20)
    kinds = []
    seq = 0
    while (entry := spool.next_after(seq)) is not None:
        kinds.append((entry.header.kind, spool.is_urgent(entry.seq)))
        seq = entry.seq
    # Room for two. Every one of the 5 routine events was evicted by newer reports; each
    # eviction was reported in an urgent spool_dropped event, which is never evicted; the
    # clean-stop heartbeat is held unless urgent reports left it no room (then refused, counted).
    # How many reports there are depends on how the worker batched the offers.
    reports = kinds.count((Kind.EVENT, True))
    held_heartbeat = kinds.count((Kind.HEARTBEAT, False))
    assert reports >= 1 and (Kind.EVENT, False) not in kinds
    assert reports + held_heartbeat == len(kinds) == stats.spool_entries == 2
    assert stats.spooled >= 5 + reports + held_heartbeat  # (an evicted heartbeat too)
