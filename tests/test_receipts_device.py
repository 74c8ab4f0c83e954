"""Delivery receipts on the device: the spool keeps what no receipt covers, the publisher sends
it again in order, declares a floor when the hub waits for a seq it does not hold, and ignores
(and counts) receipts it must not trust.

Unit tests: the broker link is faked (the transport boundary, agent.report.publisher.Link), and
the clock that times re-sends is a value the test moves. The real Mosquitto and hub are in
tests/test_receipts_burst.py and tests/test_receipts_hub.py.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.report import Publisher
from agent.report.mqtt import Ack, LinkState, Message, Will
from agent.report.publisher import Event, Link
from agent.report.receipts import MAX_RESEND_AFTER_S, ReceiptTracker
from agent.report.spool import Spool
from common.identity import Identity, MqttCredentials
from common.receipt import FLOOR_EVENT, receipt_topic, sign_receipt
from common.wire import Kind, OpeningKey, SigningKey, sign_message, unseal
from common.wire.header import SuiteId, decode_header
from tests.test_report_spool import envelope
from tests.waiting import wait_until

SITE, DEVICE = "test-school", "pi-1"


@dataclass
class Keys:
    """A device identity on disk, with the hub's private keys that go with it."""

    identity: Identity
    directory: Path
    hub_signing: SigningKey
    hub_opening: OpeningKey


def make_identity(tmp: Path) -> Keys:
    """A device enrolled with a hub whose keys the test holds."""
    hub_signing = SigningKey.generate()
    hub_opening = OpeningKey.generate(SuiteId.X25519)
    identity = Identity(
        site=SITE,
        device=DEVICE,
        device_class="sinkhole",
        group="pupils",
        key=SigningKey.generate(),
        hub_key=hub_opening.public_key,
        hub_verify_keys=(hub_signing.verify_key,),
        mqtt=MqttCredentials(url="mqtt://127.0.0.1:1"),
    )
    directory = tmp / "identity"
    identity.save(directory)
    return Keys(identity, directory, hub_signing, hub_opening)


class FakeLink:
    """The broker link, faked: records what is published, and the test plays the broker."""

    def __init__(self, will: Will, subscriptions: list[str], post: Callable[[Event], None]):
        self.will = will
        self.subscriptions = subscriptions
        self.post = post
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self.published: list[tuple[int, str, bytes]] = []
        self._unacked: list[int] = []

    def start(self) -> None:
        self.post(LinkState(True, "fake"))

    def stop(self) -> None:
        pass

    def publish(self, topic: str, payload: bytes) -> int:
        with self._lock:
            token = next(self._tokens)
            self.published.append((token, topic, payload))
            self._unacked.append(token)
            return token

    def ack_all(self) -> None:
        """PUBACK everything published so far."""
        with self._lock:
            tokens, self._unacked = self._unacked, []
        for token in tokens:
            self.post(Ack(token, True, "Success"))

    def seqs(self, start: int = 0) -> list[int]:
        """The seqs of what was published, in order (from the `start`th publication)."""
        with self._lock:
            return [decode_header(p)[0].seq for _, _, p in self.published[start:]]

    def count(self) -> int:
        with self._lock:
            return len(self.published)

    def deliver(self, payload: bytes) -> None:
        """A message arrives on the receipt topic."""
        self.post(Message(self.subscriptions[0], payload, True))


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def heartbeat() -> dict[str, Any]:
    return {"v": 1, "uptime_s": 0, "policy_version": 0}


def event(n: int) -> dict[str, Any]:
    return {"v": 1, "type": "blocked", "at": n, "count": n}


@contextmanager
def running(
    keys: Keys, spool: Path, clock: Clock, **options: Any
) -> Iterator[tuple[Publisher, FakeLink]]:
    """A started Publisher over a FakeLink; stopped afterwards."""
    links: list[FakeLink] = []

    def factory(will: Will, subs: list[str], post: Callable[[Event], None]) -> Link:
        links.append(FakeLink(will, subs, post))
        return links[-1]

    publisher = Publisher.open(
        keys.directory, spool, heartbeat, monotonic=clock, link_factory=factory, retry_s=0.02,
        **options,
    )  # fmt: skip
    publisher.start()
    try:
        yield publisher, links[0]
    finally:
        publisher.stop(timeout=0.5)


def hub_receipt(keys: Keys, through: int, *, device: str = DEVICE, site: str = SITE) -> bytes:
    return sign_receipt(through, site=site, device=device, time_ms=1, signer=keys.hub_signing)


# -- the spool -------------------------------------------------------------------------


def test_the_spool_keeps_entries_until_a_receipt_covers_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for seq in (2, 3, 5, 8):
        assert spool.put(envelope(seq))
    assert (spool.lowest(), spool.highest()) == (2, 8)
    assert spool.delete_through(4) == 2
    assert (spool.lowest(), spool.highest(), len(spool)) == (5, 8, 2)
    assert spool.delete_through(4) == 0  # already covered
    again = Spool(tmp_path, 1 << 20)  # what is left survives a restart
    assert (again.lowest(), again.stats().entries) == (5, 2)
    assert again.delete_through(100) == 2
    assert (again.lowest(), again.highest(), again.stats().bytes) == (None, None, 0)
    assert Spool(tmp_path, 1 << 20).stats().entries == 0


def test_receipted_entries_make_room_in_a_full_spool(tmp_path: Path) -> None:
    size = len(envelope(1)) + 12
    spool = Spool(tmp_path, 2 * size)
    assert [spool.put(envelope(s), urgent=True) for s in (1, 2, 3)] == [True, True, False]
    spool.delete_through(1)
    assert spool.put(envelope(4), urgent=True)
    assert spool.stats().evicted == 0


# -- re-send timing (pure) ---------------------------------------------------------------


def test_resends_wait_then_back_off_until_a_receipt_moves(tmp_path: Path) -> None:
    keys = make_identity(tmp_path)
    clock = Clock()
    tracker = ReceiptTracker(keys.identity, resend_after_s=10, clock=clock)
    tracker.receipted(0)
    tracker.acked(1)
    waits = []
    for _ in range(8):
        start = clock.now
        while not tracker.resend_due():
            clock.now += 1
        waits.append(clock.now - start)
        tracker.begin_round()
        tracker.acked(1)  # the round's send is acknowledged: a receipt should follow
    assert waits == [10, 20, 40, 80, 160, 320, 640, MAX_RESEND_AFTER_S]
    tracker.receipted(1)  # progress: nothing left to wait for
    assert not tracker.resend_due()
    tracker.acked(2)
    clock.now += 10
    assert tracker.resend_due()  # and the wait is back to the first one


# -- the publisher, over a faked link ------------------------------------------------------


def test_reports_stay_until_receipted_and_are_sent_again_in_order(tmp_path: Path) -> None:
    keys = make_identity(tmp_path)
    clock = Clock()
    with running(keys, tmp_path / "spool", clock, resend_after_s=10) as (publisher, link):
        for n in range(5):
            assert publisher.offer(Kind.EVENT, event(n))
        wait_until(lambda: link.count() == 5, what="five reports published")
        assert link.seqs() == [2, 3, 4, 5, 6]  # seq 1 is the will, never spooled
        link.ack_all()
        assert publisher.drain(10)
        assert publisher.stats().spool_entries == 5  # the broker has them; the hub may not
        link.deliver(hub_receipt(keys, 3))
        wait_until(lambda: publisher.stats().spool_entries == 3, what="2 and 3 deleted")
        clock.now += 9
        link.deliver(hub_receipt(keys, 3))  # the same receipt again (a retained redelivery)
        wait_until(lambda: publisher.stats().receipts == 2, what="the second receipt")
        assert link.count() == 5  # not yet due
        clock.now += 2
        wait_until(lambda: link.count() == 8, what="the re-send round")
        assert link.seqs(5) == [4, 5, 6]  # in order, from the oldest not receipted
        assert publisher.offer(Kind.EVENT, event(5))
        wait_until(lambda: link.count() == 9, what="a new report after the round")
        assert link.seqs(8) == [7]
        link.ack_all()
        link.deliver(hub_receipt(keys, 7))
        assert publisher.wait_receipted(10)
        stats = publisher.stats()
    assert (stats.receipted, stats.resent, stats.receipt_through) == (6, 3, 7)
    assert stats.floors_declared == 0  # the hub never waited for a seq the device lacks


def test_a_floor_is_declared_when_the_hub_waits_for_a_seq_the_device_never_sent(
    tmp_path: Path,
) -> None:
    keys = make_identity(tmp_path)
    clock = Clock()
    with running(keys, tmp_path / "spool", clock) as (publisher, link):
        for n in range(2):
            assert publisher.offer(Kind.EVENT, event(n))
        wait_until(lambda: link.count() == 2, what="two reports")
        link.ack_all()
        # The hub stored 2 and 3 but waits for 1: the will, which never fired.
        link.deliver(hub_receipt(keys, 0))
        wait_until(lambda: link.count() == 3, what="the floor event")
        _, topic, data = link.published[2]
        opened = unseal(
            data, signer=keys.identity.key.verify_key, key=keys.hub_opening, kind=Kind.EVENT
        )
        assert topic.endswith("/event") and opened.header.seq == 4
        assert (opened.payload["type"], opened.payload["count"]) == (FLOOR_EVENT, 1)
        link.deliver(hub_receipt(keys, 0))  # again, before the hub has the floor event
        wait_until(lambda: publisher.stats().receipts == 2, what="the second receipt")
        assert publisher.stats().floors_declared == 1  # one pending declaration is enough
        link.ack_all()
        link.deliver(hub_receipt(keys, 4))
        assert publisher.wait_receipted(10)


@pytest.mark.parametrize(
    "forged",
    [
        "another hub key",
        "another device",
        "another site",
        "ahead of what was issued",
        "garbage",
        "empty",
        "a policy",
    ],
)
def test_receipts_it_must_not_trust_are_ignored_and_counted(tmp_path: Path, forged: str) -> None:
    keys = make_identity(tmp_path)
    clock = Clock()
    other = SigningKey.generate()
    data = {
        "another hub key": sign_receipt(99, site=SITE, device=DEVICE, time_ms=1, signer=other),
        "another device": hub_receipt(keys, 3, device="pi-2"),
        "another site": hub_receipt(keys, 3, site="elm-school"),
        "ahead of what was issued": hub_receipt(keys, 1000),  # stale, from before a reset
        "garbage": b"\x00" * 80,
        "empty": b"",
        "a policy": sign_message(
            {"v": 1, "site": SITE},
            site=SITE,
            device=DEVICE,
            version=3,
            time_ms=1,
            signer=keys.hub_signing,
        ),
    }[forged]
    with running(keys, tmp_path / "spool", clock) as (publisher, link):
        for n in range(3):
            assert publisher.offer(Kind.EVENT, event(n))
        wait_until(lambda: link.count() == 3, what="three reports")
        link.ack_all()
        link.deliver(data)
        wait_until(lambda: publisher.stats().receipts_ignored == 1, what="the ignored receipt")
        stats = publisher.stats()
        assert (stats.spool_entries, stats.receipts, stats.receipt_through) == (3, 0, None)
        link.deliver(hub_receipt(keys, 4))  # the real one still works
        assert publisher.wait_receipted(10)
    assert publisher.stats().receipts_ignored == 1


def test_the_link_subscribes_to_the_devices_own_receipt_topic(tmp_path: Path) -> None:
    keys = make_identity(tmp_path)
    with running(keys, tmp_path / "spool", Clock()) as (_publisher, link):
        assert link.subscriptions == [receipt_topic(SITE, DEVICE)]
        assert decode_header(link.will.payload)[0].kind is Kind.HEARTBEAT
