"""The Publisher: seal each report, spool it, and drain the spool to the broker in order.

offer() -> bounded in-memory inbox -> worker thread: seal (common.wire.seal, persistent Sequence)
-> Spool (fsync) -> MqttLink publish at QoS 1 -> PUBACK -> the hub's signed receipt (on the
device's receipt topic) -> delete from the spool.

Sealing happens before anything touches disk, so the spool only ever holds sealed envelopes.
Urgent reports (offer(urgent=True)) are sealed first and sent ahead of every routine one still
waiting, so after a day offline a concern reaches the hub before the day's summaries. When the
spool is full it evicts its oldest routine reports and the publisher says so to the hub, in a
`spool_dropped` event (urgent). Otherwise delivery is in sequence order: at most `window` envelopes are awaiting PUBACK; after a reconnect,
paho re-sends those first and nothing newer is published until they are acknowledged. A PUBACK
means only that the broker has the report: it stays spooled until a receipt covers it, and what
no receipt covers in time is sent again, in order (agent.report.receipts). The broker holds a
sealed heartbeat with clean_stop=false as the connection's will; stop() spools and sends a
sealed heartbeat with clean_stop=true, then disconnects cleanly so the broker drops the will.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from agent.report.errors import LinkError, SpoolError
from agent.report.mqtt import Ack, LinkState, Message, MqttLink, Will
from agent.report.receipts import DEFAULT_RESEND_AFTER_S, ReceiptTracker
from agent.report.spool import Spool, SpoolEntry
from common.identity import Identity
from common.receipt import floor_event, receipt_topic
from common.wire import topics
from common.wire.envelope import seal
from common.wire.errors import WireError
from common.wire.header import Kind
from common.wire.sequence import Sequence

log = logging.getLogger(__name__)

Document = Mapping[str, Any]
HeartbeatSource = Callable[[], Document]
Event = Ack | LinkState | Message
EVICTION_REPORT_S = 600.0  # evictions from a full spool are reported at most this often


class Link(Protocol):
    """What the publisher needs of its broker link (agent.report.mqtt.MqttLink)."""

    def start(self) -> None:
        """Start connecting in the background."""

    def stop(self) -> None:
        """Disconnect cleanly."""

    def publish(self, topic: str, payload: bytes) -> int:
        """Send at QoS 1; the token a later Ack carries. Raises LinkError."""


# Builds the link: the will, the topics to subscribe to, and where its events go.
LinkFactory = Callable[[Will, list[str], Callable[[Event], None]], Link]


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters of one Publisher, for metrics (monotonic except the spool's size and `connected`)."""

    enqueued: int
    dropped_queue_full: int
    dropped_after_stop: int
    invalid: int  # documents that did not fit their schema: a bug, logged as an error
    spooled: int
    spool_dropped: int  # refused by a full spool or a failing disk
    spool_corrupt: int
    spool_entries: int
    spool_bytes: int
    delivered: int  # acknowledged by the broker (PUBACK); kept until a receipt covers it
    rejected: int  # PUBACK with a failure reason code: kept and retried later
    connected: bool
    receipted: int  # deleted from the spool because a receipt covered them
    resent: int  # published again: acknowledged by the broker, but no receipt came in time
    receipts: int  # verified receipts applied
    receipts_ignored: int  # receipts that failed verification or were for someone else
    receipt_through: int | None  # the hub's latest `through` (None: no receipt yet)
    floors_declared: int  # spool_floor events sent


class Publisher:
    """Seals, spools and publishes reports from one device identity. Thread-safe offer()."""

    def __init__(
        self,
        identity: Identity,
        sequence: Sequence,
        spool: Spool,
        heartbeat: HeartbeatSource,
        *,
        queue_size: int = 1024,
        window: int = 32,
        retry_s: float = 5.0,
        min_backoff_s: int = 1,
        max_backoff_s: int = 60,
        will_delay_s: int = 0,
        resend_after_s: float = DEFAULT_RESEND_AFTER_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        link_factory: LinkFactory | None = None,
        subscriptions: tuple[str, ...] = (),
        on_message: Callable[[Message], None] | None = None,
        max_age_s: float | None = None,
    ) -> None:
        if queue_size <= 0 or window <= 0:
            raise ValueError("queue_size and window must be positive")
        self._identity = identity
        self._sequence = sequence
        self._spool = spool
        self._heartbeat = heartbeat
        self._queue_size = queue_size
        self._window = window
        self._retry_s = retry_s
        self._backoff = (min_backoff_s, max_backoff_s)
        self._will_delay_s = will_delay_s
        self._clock = clock
        self._monotonic = monotonic
        self._link_factory = link_factory or self._mqtt_link
        # More topics (the device's policies) and who gets their messages (on the worker thread).
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._max_age_s = max_age_s  # routine reports older than this are evicted (reported)
        self._next_age_check = 0.0
        self._cond = threading.Condition()
        # Guarded by _cond: the hand-off from offer() and from paho's thread to the worker.
        self._inbox: deque[tuple[Kind, Document, bool]] = deque()
        self._events: list[Event] = []
        self._stopping = False
        self._stop_deadline = 0.0
        self._idle = len(spool) == 0
        self._enqueued = 0
        self._dropped_queue_full = 0
        self._dropped_after_stop = 0
        # Owned by the worker thread.
        self._inflight: dict[int, int] = {}  # link token -> seq
        self._cursor = 0  # highest seq handed to the link in the routine (in order) pass
        self._urgent_cursor = 0  # highest urgent seq handed to the link ahead of the rest
        self._next_eviction_report = 0.0  # monotonic time before which evictions add up
        self._hold_until = 0.0
        self._resending = False
        self._up = False
        self._receipts = ReceiptTracker(identity, resend_after_s, monotonic)
        self._issued_high = 0  # the highest seq sealed by this publisher
        self._sent_high = 0  # the highest seq handed to the link: at or below, a re-send
        # Written by the worker only; read by stats().
        self._invalid = 0
        self._seq_failures = 0
        self._delivered = 0
        self._rejected = 0
        self._receipted = 0
        self._resent = 0
        self._link: Link | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def open(
        cls,
        identity_dir: Path,
        spool_dir: Path,
        heartbeat: HeartbeatSource,
        *,
        max_spool_bytes: int = 64 * 1024 * 1024,
        broker_url: str | None = None,
        **options: Any,
    ) -> Publisher:
        """A Publisher for the identity in `identity_dir` (IdentityError if not enrolled).

        `broker_url` overrides the URL in mqtt.json (credentials and CA still come from there).
        """
        identity = Identity.load(identity_dir)
        if broker_url is not None:
            identity = replace(identity, mqtt=replace(identity.mqtt, url=broker_url))
        spool = Spool(spool_dir, max_spool_bytes)
        return cls(identity, Identity.sequence(identity_dir), spool, heartbeat, **options)

    def start(self) -> None:
        """Seal the will, start the broker link and the worker thread. Raises LinkError/WireError."""
        if self._thread is not None:
            return
        will_doc = dict(self._heartbeat())
        will_doc["clean_stop"] = False
        will = Will(self._topic(Kind.HEARTBEAT), self._seal(Kind.HEARTBEAT, will_doc))
        receipts = [receipt_topic(self._identity.site, self._identity.device)]
        link = self._link_factory(will, [*receipts, *self._subscriptions], self._post_event)
        self._link = link
        self._thread = threading.Thread(target=self._run, name="hedgerow-publisher", daemon=True)
        self._thread.start()
        link.start()

    def _mqtt_link(
        self, will: Will, subscriptions: list[str], post: Callable[[Event], None]
    ) -> Link:
        return MqttLink(
            self._identity.mqtt,
            self._identity.device,
            on_ack=post,
            on_state=post,
            on_message=post,
            subscriptions=subscriptions,
            will=will,
            max_inflight=self._window,
            min_backoff_s=self._backoff[0],
            max_backoff_s=self._backoff[1],
            will_delay_s=self._will_delay_s,
        )

    def offer(self, kind: Kind, document: Document, *, urgent: bool = False) -> bool:
        """Queue a report without blocking; False (and counted) if the queue is full or stopped.
        An urgent report goes ahead of every routine one not yet sent."""
        with self._cond:
            if self._stopping:
                self._dropped_after_stop += 1
                return False
            if len(self._inbox) >= self._queue_size:
                self._dropped_queue_full += 1
                if self._dropped_queue_full == 1 or self._dropped_queue_full % 1000 == 0:
                    log.warning(
                        "report queue full (%d): %d reports dropped so far",
                        self._queue_size,
                        self._dropped_queue_full,
                    )
                return False
            self._inbox.append((kind, dict(document), urgent))
            self._enqueued += 1
            self._idle = False
            self._cond.notify_all()
            return True

    def drain(self, timeout: float) -> bool:
        """Wait until everything offered so far is acknowledged by the broker; False on timeout."""
        return self._wait_for(lambda: self._idle and not self._inbox, timeout)

    def wait_receipted(self, timeout: float) -> bool:
        """Wait until everything offered so far is covered by a receipt (the spool is empty);
        False on timeout."""
        return self._wait_for(lambda: not self._inbox and len(self._spool) == 0, timeout)

    def _wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))  # receipts delete without notifying
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Spool what is queued plus a clean-stop heartbeat, try for `timeout` seconds to deliver
        it all, then disconnect cleanly. Whatever is undelivered stays spooled for next time."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._stop_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        thread.join()
        self._thread = None
        if self._link is not None:
            self._link.stop()
            self._link = None

    def oldest_unreceipted_ms(self) -> int | None:
        """The report time of the oldest report no receipt covers yet (None: all receipted)."""
        return self._spool.oldest_time_ms()

    def stats(self) -> PublisherStats:
        """A snapshot of the counters."""
        spool = self._spool.stats()
        receipts = self._receipts.counters()
        with self._cond:
            return PublisherStats(
                enqueued=self._enqueued,
                dropped_queue_full=self._dropped_queue_full,
                dropped_after_stop=self._dropped_after_stop,
                invalid=self._invalid,
                spooled=spool.spooled,
                spool_dropped=spool.dropped + self._seq_failures,
                spool_corrupt=spool.corrupt,
                spool_entries=spool.entries,
                spool_bytes=spool.bytes,
                delivered=self._delivered,
                rejected=self._rejected,
                connected=self._up,
                receipted=self._receipted,
                resent=self._resent,
                receipts=receipts.accepted,
                receipts_ignored=receipts.ignored,
                receipt_through=receipts.through,
                floors_declared=receipts.declarations,
            )

    # The worker thread.

    def _post_event(self, event: Event) -> None:
        # Runs on paho's thread: hand off and return at once.
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def _run(self) -> None:
        clean_stop_spooled = False
        while True:
            with self._cond:
                if not (self._inbox or self._events or (self._stopping and not clean_stop_spooled)):
                    self._cond.wait(timeout=min(self._retry_s, 1.0))
                inbox, self._inbox = self._inbox, deque()
                events, self._events = self._events, []
                stopping = self._stopping
            for kind, document, urgent in sorted(inbox, key=lambda item: not item[2]):
                self._spool_one(kind, document, urgent=urgent)
            try:
                if stopping and not clean_stop_spooled:
                    self._report_evictions(now=True)
                    self._spool_one(Kind.HEARTBEAT, {**self._heartbeat(), "clean_stop": True})
                    clean_stop_spooled = True
                for event in events:
                    self._apply(event)
                self._age_out()
                self._fill_window()
            except Exception:
                # Contain the unexpected: the worker must outlive one bad report.
                log.exception("report publisher: unexpected error; continuing")
            with self._cond:
                self._idle = not self._inbox and not self._inflight and self._all_sent()
                self._cond.notify_all()
                if stopping and (self._idle or time.monotonic() >= self._stop_deadline):
                    if not self._idle:
                        log.warning(
                            "stopping before the broker took every report; all %d not yet "
                            "receipted stay spooled",
                            len(self._spool),
                        )
                    return

    def _all_sent(self) -> bool:
        highest = self._spool.highest()
        if highest is None or highest <= self._cursor:
            return True
        # What is above the cursor may all be urgent ones already sent ahead.
        entry = self._next_routine()
        return entry is None

    def _seal(self, kind: Kind, document: Document) -> bytes:
        seq = self._sequence.next()
        self._issued_high = max(self._issued_high, seq)
        return seal(
            kind,
            document,
            site=self._identity.site,
            device=self._identity.device,
            seq=seq,
            time_ms=int(self._clock() * 1000),
            to=self._identity.hub_key,
            signer=self._identity.key,
        )

    def _topic(self, kind: Kind) -> str:
        return topics.up(self._identity.site, self._identity.device, kind)

    def _spool_one(self, kind: Kind, document: Document, *, urgent: bool = False) -> int | None:
        """Seal and spool one report; its seq, or None if it was dropped (counted, logged)."""
        try:
            envelope = self._seal(kind, document)
        except (WireError, TypeError, ValueError) as exc:  # not JSON-able, or off-schema
            self._invalid += 1
            log.error("dropping a %s report that cannot be sealed: %s", kind.name.lower(), exc)
            return None
        except OSError as exc:
            self._seq_failures += 1
            log.warning("dropping a %s report: sequence file: %s", kind.name.lower(), exc)
            return None
        seq = self._issued_high
        try:
            stored = self._spool.put(envelope, urgent=urgent)  # a refusal is counted and logged
        except SpoolError as exc:  # cannot happen for a freshly sealed envelope; contained anyway
            self._invalid += 1
            log.error("dropping a %s report: %s", kind.name.lower(), exc)
            return None
        if document.get("type") != "spool_dropped":
            self._report_evictions()
        return seq if stored else None

    def _age_out(self) -> None:
        """Once a minute: evict routine reports older than max_age_s, and say so."""
        if self._max_age_s is None or self._monotonic() < self._next_age_check:
            return
        self._next_age_check = self._monotonic() + 60.0
        cutoff = int((self._clock() - self._max_age_s) * 1000)
        if self._spool.evict_older_than(cutoff):
            self._report_evictions()

    def _report_evictions(self, *, now: bool = False) -> None:
        """Tell the hub that the full spool evicted routine reports (never silently): at most
        one `spool_dropped` event per EVICTION_REPORT_S (they add up meanwhile), and one at a
        stop, so a spool that stays full does not fill itself with reports of its own drops."""
        if not now and self._monotonic() < self._next_eviction_report:
            return
        eviction = self._spool.take_evictions()
        if eviction is None:
            return
        event = {
            "v": 1,
            "type": "spool_dropped",
            "at": int(self._clock() * 1000),
            "count": eviction.count,
            "detail": {
                "count": eviction.count,
                "oldest_at": eviction.oldest_ms,
                "newest_at": eviction.newest_ms,
            },
        }
        self._next_eviction_report = self._monotonic() + EVICTION_REPORT_S
        self._spool_one(Kind.EVENT, event, urgent=True)

    def _apply(self, event: Event) -> None:
        if isinstance(event, Message):
            if event.topic in self._subscriptions and self._on_message is not None:
                self._on_message(event)
            else:
                self._receipt(event)
            return
        if isinstance(event, LinkState):
            self._up = event.connected
            if not event.connected and self._inflight:
                self._resending = True  # paho re-sends these after reconnecting
            return
        seq = self._inflight.pop(event.token, None)
        if seq is None:
            return
        if event.ok:
            self._receipts.acked(seq)  # kept until a receipt covers it
            self._delivered += 1
            return
        self._rejected += 1
        log.warning("broker rejected report seq %d (%s); retrying later", seq, event.reason)
        self._rewind(seq - 1)
        self._hold_until = self._monotonic() + self._retry_s

    def _receipt(self, message: Message) -> None:
        """A message on the receipt topic: delete what a verified receipt covers, and declare
        a floor if the hub waits for a seq this device does not hold."""
        through = self._receipts.verify(message.payload, self._issued_high)
        if through is None:
            return
        self._receipts.receipted(through)
        self._receipted += self._spool.delete_through(through)
        self._cursor = max(self._cursor, through)  # never send again what is covered
        self._urgent_cursor = max(self._urgent_cursor, through)
        floor = self._receipts.floor_to_declare(self._spool.lowest())
        if floor is not None:
            seq = self._spool_one(Kind.EVENT, floor_event(floor, int(self._clock() * 1000)))
            if seq is not None:
                self._receipts.declared(seq, floor)
                log.info("declared spool floor %d (the hub's receipt waits at %d)", floor, through)

    def _fill_window(self) -> None:
        link = self._link
        if link is None or not self._up or self._monotonic() < self._hold_until:
            return
        if self._resending:
            if self._inflight:
                return  # let paho's re-sends land first, to keep delivery in order
            self._resending = False
        if self._receipts.resend_due():
            # Go back to the oldest report no receipt covers and send all from there, in order.
            self._receipts.begin_round()
            self._rewind((self._spool.lowest() or 1) - 1)
        pending = set(self._inflight.values())
        while len(self._inflight) < self._window:  # urgent reports first, in their own order
            seq = self._spool.urgent_after(self._urgent_cursor)
            if seq is None:
                break
            self._urgent_cursor = seq
            entry = self._spool.next_after(seq - 1)
            if entry is None or entry.seq != seq or seq in pending:
                continue
            if not self._send(link, entry):
                return
        while len(self._inflight) < self._window:
            entry = self._next_routine()
            if entry is None:
                return
            self._cursor = entry.seq
            if entry.seq in pending:
                continue
            if not self._send(link, entry):
                return

    def _next_routine(self) -> SpoolEntry | None:
        """The next entry above the routine cursor that the urgent pass has not already sent
        (the cursor moves past those)."""
        while True:
            entry = self._spool.next_after(self._cursor)
            if entry is None:
                return None
            if entry.seq <= self._urgent_cursor and self._spool.is_urgent(entry.seq):
                self._cursor = entry.seq  # sent ahead already
                continue
            return entry

    def _rewind(self, seq: int) -> None:
        """Send again from above `seq`: both passes go back."""
        self._cursor = min(self._cursor, seq)
        self._urgent_cursor = min(self._urgent_cursor, seq)

    def _send(self, link: Link, entry: SpoolEntry) -> bool:
        try:
            header = entry.header
            token = link.publish(topics.up(header.site, header.device, header.kind), entry.envelope)
        except LinkError as exc:
            log.warning("cannot publish report seq %d: %s; retrying later", entry.seq, exc)
            self._rewind(entry.seq - 1)
            self._hold_until = self._monotonic() + self._retry_s
            return False
        self._inflight[token] = entry.seq
        if entry.seq <= self._sent_high:
            self._resent += 1
        self._sent_high = max(self._sent_high, entry.seq)
        return True
