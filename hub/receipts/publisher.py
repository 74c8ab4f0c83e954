"""Delivery receipts after each commit, coalesced per device, on a thread of their own.

    ingest thread, after its commit:  committed(message)  -> a bounded list (O(1), no I/O)
    receipts thread, at most once per interval_s:
        the devices those messages name -> what is stored (its own database connection)
        -> `through` moved by the rule (hub.receipts.contiguity) -> kept (receipts table)
        -> signed and published, retained, QoS 1, if it changed since this process last said

Ingest never waits for any of it: a full list drops the message's hint (counted), and the
device's own re-send brings it back. The database is what a receipt is worked out from, never
the hint, so a forged message on a device's topic can at most make the hub look again.
stop() runs one last round with everything pending.

Several hub processes (shared subscriptions) work from the same tables: each publishes what
it sees, and `through` is kept with "never goes down", so they agree within a round or two.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from common.receipt import declared_floor, receipt_topic, sign_receipt
from common.wire.envelope import DeviceRecord
from common.wire.errors import OpenError, WireError
from common.wire.header import Header, Kind, decode_header
from common.wire.signing import VerifyKey
from common.wire.topics import UpTopic, parse_up
from hub.ingest.hooks import Publish
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.model import DeviceInfo
from hub.mqtt import Incoming
from hub.receipts.contiguity import Progress
from hub.receipts.settled import refused_for_good
from hub.store.database import Database
from hub.store.devices import get_devices
from hub.store.receipts import (
    floor_events_among,
    forget_through,
    last_reset,
    load_throughs,
    resets_after,
    save_throughs,
    seqs_after,
    stored_among,
)
from hub.store.reports import max_seq

log = logging.getLogger(__name__)

HEADER_MAX = 32 + 63 + 63  # the longest header: all a hint needs once the byte budget is spent
MAX_SETTLE_CHECKS = 8  # unstored envelopes opened again per device per round


@dataclass(frozen=True, slots=True)
class _Hint:
    """One committed message of a device: its seq, kind, and the envelope while the budget
    allows (None: the header only, enough to walk but not to settle)."""

    topic: UpTopic
    header: Header
    data: bytes | None


class ReceiptPublisher:
    """Publishes every device's signed receipt after ingest commits (see the module docstring).
    committed() from the ingest thread; start() and stop() from the service's."""

    def __init__(
        self,
        database_url: str,
        keys: HubKeys,
        publish: Publish,
        metrics: HubMetrics,
        *,
        interval_s: float = 1.0,
        max_pending: int = 100_000,
        max_pending_bytes: int = 16 * 1024 * 1024,
        max_devices: int = 100_000,
        idle_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database_url = database_url
        self._keys = keys
        self._publish = publish
        self._metrics = metrics
        self._interval_s = interval_s
        self._max_pending = max_pending
        self._max_bytes = max_pending_bytes
        self._max_devices = max_devices
        self._idle_s = idle_s  # how often an idle thread still looks for window resets
        self._clock = clock
        self._lock = threading.Lock()
        # Guarded by _lock: the hand-off from the ingest thread.
        self._pending: deque[tuple[str, bytes, bool]] = deque()  # topic, bytes, whole envelope
        self._bytes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Owned by the receipts thread.
        self._progress: OrderedDict[tuple[str, str], Progress] = OrderedDict()
        self._retry: set[tuple[str, str]] = set()
        self._last_reset: int | None = None
        self._thread = threading.Thread(target=self._run, name="hub-receipts", daemon=True)

    # -- the ingest thread -------------------------------------------------------------

    def committed(self, message: Incoming) -> None:
        """hub.ingest.hooks.CommitListener: a message whose batch has committed."""
        with self._lock:
            if len(self._pending) >= self._max_pending:
                self._metrics.receipts.labels("overflow").inc()
                return
            data, whole = message.payload, True
            if self._bytes + len(data) > self._max_bytes:
                data, whole = data[:HEADER_MAX], False
            self._pending.append((message.topic, data, whole))
            self._bytes += len(data)
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the receipts thread (it opens its own database connection)."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish the receipts still due (one last round, at once), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    # -- the receipts thread -------------------------------------------------------------

    def _run(self) -> None:
        db: Database | None = None
        last_round = float("-inf")
        try:
            while True:
                if not self._stop.is_set():
                    self._wake.wait(self._idle_s)
                    # Coalesce: at most one round per interval, with whatever came meanwhile.
                    wait = last_round + self._interval_s - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
                stopping = self._stop.is_set()
                with self._lock:
                    batch, self._pending, self._bytes = self._pending, deque(), 0
                    self._wake.clear()
                try:
                    if db is None:
                        db = Database(self._database_url)
                    self._round(db, batch)
                except Exception as exc:  # the database failed: try again next round
                    log.warning("receipts: round failed (%r); trying again", exc)
                    self._metrics.receipts.labels("failed").inc()
                    self._retry.update(self._devices_of(batch))
                    if db is not None:
                        db.close()
                        db = None
                last_round = time.monotonic()
                if stopping:
                    return
        finally:
            if db is not None:
                db.close()

    def _devices_of(self, batch: deque[tuple[str, bytes, bool]]) -> set[tuple[str, str]]:
        topics = (parse_up(topic) for topic, _, _ in batch)
        return {(t.site, t.device) for t in topics if t is not None}

    def _hints(self, batch: deque[tuple[str, bytes, bool]]) -> dict[tuple[str, str], list[_Hint]]:
        """The committed messages that are a device's envelopes, by device (a header that does
        not parse, or names another device than its topic, tells nothing about that device)."""
        hints: dict[tuple[str, str], list[_Hint]] = {}
        for topic_text, data, whole in batch:
            topic = parse_up(topic_text)
            if topic is None:
                continue
            try:
                header, _ = decode_header(data)
            except OpenError:
                continue
            if (header.site, header.device) != (topic.site, topic.device):
                continue
            hints.setdefault((topic.site, topic.device), []).append(
                _Hint(topic, header, data if whole else None)
            )
        return hints

    def _round(self, db: Database, batch: deque[tuple[str, bytes, bool]]) -> None:
        self._poll_resets(db)
        hints = self._hints(batch)
        keys = sorted(set(hints) | self._retry)
        self._retry = set()
        if not keys:
            return
        devices = get_devices(db, keys)
        kept = load_throughs(db, keys)
        now_ms = int(self._clock() * 1000)
        moved: list[tuple[str, str, int]] = []
        due: list[tuple[tuple[str, str], Progress]] = []
        for key in keys:
            info = devices.get(key)
            if info is None or info.revoked_ms is not None:
                self._progress.pop(key, None)  # no receipts for unknown or revoked devices
                continue
            progress = self._state(key)
            progress.through = max(progress.through, kept.get(key, 0))
            self._learn(db, info, progress, hints.get(key, []))
            progress.advance(functools.partial(seqs_after, db, *key))
            if progress.through > kept.get(key, 0):
                moved.append((*key, progress.through))
            if progress.published != progress.through:
                due.append((key, progress))
        if moved:
            with db.transaction():
                save_throughs(db, moved, now_ms)
        for key, progress in due:
            self._send(key, progress, now_ms)

    def _state(self, key: tuple[str, str]) -> Progress:
        progress = self._progress.get(key)
        if progress is None:
            progress = self._progress[key] = Progress()
            while len(self._progress) > self._max_devices:
                self._progress.popitem(last=False)
        else:
            self._progress.move_to_end(key)
        return progress

    def _learn(
        self, db: Database, info: DeviceInfo, progress: Progress, hints: list[_Hint]
    ) -> None:
        """What this round's messages tell beyond the stored rows: the floors the device
        declared, and the seqs settled by a refusal that would always repeat."""
        above = [h for h in hints if h.header.seq > progress.through]
        if not above:
            return
        site, device = info.site, info.device
        seqs = sorted({h.header.seq for h in above})
        stored = stored_among(db, site, device, seqs)
        events = sorted({h.header.seq for h in above if h.header.kind is Kind.EVENT} & stored)
        for seq, body in floor_events_among(db, site, device, events):
            floor = _floor_of(body)
            if floor is not None and progress.declare(floor, seq):
                self._metrics.receipts.labels("declared").inc()
        unstored = {h.header.seq: h for h in above if h.header.seq not in stored and h.data}
        if not unstored:
            return
        try:
            record = DeviceRecord(VerifyKey(info.verify_key))
        except WireError:
            return
        highest = max_seq(db, site, device)
        for seq in sorted(unstored)[:MAX_SETTLE_CHECKS]:
            hint = unstored[seq]
            assert hint.data is not None
            if refused_for_good(hint.data, hint.topic, record, self._keys, highest):
                progress.settle(seq)
                self._metrics.receipts.labels("settled").inc()

    def _send(self, key: tuple[str, str], progress: Progress, now_ms: int) -> None:
        site, device = key
        try:
            message = sign_receipt(
                progress.through, site=site, device=device, time_ms=now_ms,
                signer=self._keys.signing,
            )  # fmt: skip
            self._publish(receipt_topic(site, device), message, True)
        except Exception as exc:  # contained: the next round tries again
            log.warning("receipts: cannot publish for %s/%s: %r", site, device, exc)
            self._metrics.receipts.labels("failed").inc()
            self._retry.add(key)
            return
        progress.published = progress.through
        self._metrics.receipts.labels("published").inc()
        log.debug("receipt %s/%s through %d", site, device, progress.through)

    def _poll_resets(self, db: Database) -> None:
        """A device whose window the operator reset numbers from 1 again: forget its receipt
        here and in the table, and publish a fresh one at once (the retained one is void)."""
        if self._last_reset is None:
            self._last_reset = last_reset(db)
            return
        for row_id, site, device in resets_after(db, self._last_reset):
            self._last_reset = max(self._last_reset, row_id)
            self._progress.pop((site, device), None)
            with db.transaction():
                forget_through(db, site, device)
            self._retry.add((site, device))
            log.info("receipts: %s/%s window reset; its receipt starts again from 0", site, device)


def _floor_of(body: str) -> int | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return declared_floor(document) if isinstance(document, dict) else None
