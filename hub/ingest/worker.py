"""The ingest thread: takes messages off a bounded queue in batches, opens them, stores them
and runs the rules in one transaction per batch, commits, and only then acknowledges them.

Why nothing is lost: a message is acknowledged only after the commit that stored it, and the
hub's MQTT session is persistent, so the broker redelivers anything unacknowledged when the hub
comes back. Why nothing is stored twice: (site, device, seq) is unique and a redelivered copy
is recognised (same digest) and acknowledged without a second row.

Why the queue stays bounded: the broker should never have more than Receive Maximum
unacknowledged messages out to us (hub.mqtt.RECEIVE_MAXIMUM) and the queue holds twice that. If
it is full anyway, paho's thread waits for room (counted and logged) rather than drop: a dropped
message is redelivered only after a reconnect, and meanwhile keeps its Receive Maximum slot.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.wire.envelope import MAX_ENVELOPE, Keyring
from agent.wire.errors import OpenError, Reason
from hub.ingest.directory import CachedDirectory
from hub.ingest.hooks import EnrollHandler, Publish, ReportRules
from hub.ingest.opening import Result
from hub.ingest.pipeline import Accepted, EnrollRequest, Ignored, Opener, Redelivered, Rejected
from hub.ingest.pool import OpeningPool, Submitted
from hub.ingest.record import prepare
from hub.metrics import HubMetrics
from hub.model import StoredReport
from hub.mqtt import RECEIVE_MAXIMUM, Incoming
from hub.store.database import Database
from hub.store.devices import record_seen
from hub.store.rejections import Rejection, add_rejections
from hub.store.replay import StoreReplayGuard
from hub.store.reports import insert_reports, stored_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How ingest batches: at most max_messages per transaction; queue bound; tick period."""

    max_messages: int = 500
    queue_size: int = 2 * RECEIVE_MAXIMUM
    tick_s: float = 30.0
    max_backoff_s: float = 10.0


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A batch whose envelopes worker processes are opening while the previous one commits."""

    batch: Sequence[Incoming]
    submitted: Submitted | None
    indexes: tuple[int, ...]  # which messages of the batch were sent
    opener: Opener  # results are used only with the opener (and connection) they were sent by


def _now_ms() -> int:
    return int(time.time() * 1000)


class IngestWorker:
    """One thread with its own database connection; start(), offer() from paho, stop()."""

    def __init__(
        self,
        database_url: str,
        keyring: Keyring,
        *,
        ack: Callable[[Incoming], bool],
        metrics: HubMetrics,
        rules: ReportRules | None = None,
        enroll: EnrollHandler | None = None,
        publish: Publish | None = None,
        limits: BatchLimits = BatchLimits(),
        opening_processes: int = 0,
        keys_dir: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.keyring = keyring
        self.rules = rules
        self.enroll = enroll
        self.publish = publish
        self.limits = limits
        self.metrics = metrics
        self._ack = ack
        self._queue: queue.Queue[Incoming] = queue.Queue(limits.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._last_drop_log = 0.0
        self._db: Database | None = None
        self._opener: Opener | None = None
        # Worker processes for the CPU part of opening (owned by the ingest thread).
        self._pool: OpeningPool | None = None
        if opening_processes > 0:
            if keys_dir is None:
                raise ValueError("opening processes need the keys directory")
            self._pool = OpeningPool(keys_dir, opening_processes, metrics.opening_replaced.inc)
        metrics.track_queue(self._queue.qsize)

    # -- the paho side ------------------------------------------------------------------

    def offer(self, message: Incoming) -> None:
        """Hand a message over (paho's thread). If the queue is full, wait for room: that holds
        paho's reading back, and TCP holds the broker back. A message dropped here would never
        be redelivered on this connection (MQTT redelivers only on reconnect) and its Receive
        Maximum slot would stay taken, so enough drops would stall ingest for good."""
        try:
            self._queue.put_nowait(message)
            return
        except queue.Full:
            pass
        self.metrics.count("held", "queue_full")
        waited = 0.0
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=1.0)
                return
            except queue.Full:
                waited += 1.0
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.warning(
                    "ingest queue full (%d) for %.0f s: holding the broker back",
                    self.limits.queue_size,
                    waited,
                )
        # Stopping: not acknowledged, so the broker redelivers it on the next connection.
        self.metrics.count("dropped", "stopping")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (it opens its own database connection: connections are per thread)."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch (commit, ack), then stop; queued messages stay unacked."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def opening_pids(self) -> list[int]:
        """The process ids of the opening workers that take work (none without them)."""
        return self._pool.pids if self._pool is not None else []

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def _connect(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception as exc:
                log.debug("closing a broken database connection: %r", exc)
        self._db = None
        db = Database(self.database_url)
        self._db = db
        self._opener = Opener(CachedDirectory(db), self.keyring, StoreReplayGuard(db))

    def _database_ok(self) -> bool:
        """Reconnect and probe: False if the database is unreachable."""
        try:
            self._connect()
            assert self._db is not None
            self._db.execute("SELECT 1")
            return True
        except Exception as exc:
            log.error("database unavailable: %s", exc)
            return False

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        if self._pool is not None:
            self._pool.start()
        backoff = 0.5
        while not self._database_ok():
            if self._stop.wait(backoff):
                if self._pool is not None:
                    self._pool.stop()
                return
            backoff = min(backoff * 2, self.limits.max_backoff_s)
        next_tick = time.monotonic() + self.limits.tick_s
        ahead: _Ahead | None = None
        try:
            while not self._stop.is_set():
                batch = self._collect(wait=ahead is None)
                if self._pool is None:
                    if batch:
                        self._handle(batch)
                else:
                    # Workers open this batch while this thread commits the previous one. A
                    # worker gets a new chunk only once its last results are read: it could
                    # not take one while blocked writing them.
                    opened = self._opened(ahead) if ahead is not None else None
                    opening = self._open_ahead(batch) if batch else None
                    if ahead is not None:
                        self._handle(ahead.batch, opened)
                    ahead = opening
                if self.rules is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.limits.tick_s
                    self._tick()
            if ahead is not None:  # taken off the queue: finish it (commit, ack)
                self._handle(ahead.batch, self._opened(ahead))
        finally:
            if self._pool is not None:
                self._pool.stop()
            if self._db is not None:
                self._db.close()
                self._db = None

    def _collect(self, wait: bool = True) -> list[Incoming]:
        try:
            batch = [self._queue.get(timeout=0.2) if wait else self._queue.get_nowait()]
        except queue.Empty:
            return []
        # Take what is already waiting: batches grow when commits are slow and stay small
        # (low latency) when the hub keeps up.
        while len(batch) < self.limits.max_messages:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _open_ahead(self, batch: Sequence[Incoming]) -> _Ahead:
        """Send the batch's device reports, with their devices' public keys, to the workers."""
        assert self._pool is not None and self._opener is not None
        opener = self._opener
        indexes: list[int] = []
        records: dict[tuple[str, str], tuple[bytes, bool] | None] = {}
        try:
            opener.load_devices(batch)
            for i, message in enumerate(batch):
                topic = opener.report_topic(message)
                if topic is None or len(message.payload) > MAX_ENVELOPE:
                    continue  # refused or handled without opening: not worth a round trip
                key = (topic.site, topic.device)
                if key not in records:
                    record = opener.directory.device_record(*key)
                    records[key] = (
                        None if record is None else (record.verify_key.public, record.revoked)
                    )
                indexes.append(i)
        except Exception as exc:  # the database failed: _handle() deals with it in this thread
            log.warning("cannot prepare a batch for the opening workers: %r", exc)
            return _Ahead(batch, None, (), opener)
        payloads = [batch[i].payload for i in indexes]
        return _Ahead(batch, self._pool.submit(payloads, records), tuple(indexes), opener)

    def _opened(self, ahead: _Ahead) -> list[Result | None] | None:
        """The workers' results by message (None: open it here), or None to open all here."""
        if ahead.submitted is None or self._pool is None or ahead.opener is not self._opener:
            return None
        results = self._pool.results(ahead.submitted)
        if results is None:
            return None
        opened: list[Result | None] = [None] * len(ahead.batch)
        for i, result in zip(ahead.indexes, results, strict=True):
            opened[i] = result
        return opened

    def _tick(self) -> None:
        assert self._db is not None and self.rules is not None
        try:
            self.rules.tick(self._db, _now_ms())  # the engine runs its own transaction
        except Exception:
            log.exception("rules tick failed")

    def _handle(
        self, batch: Sequence[Incoming], opened: Sequence[Result | None] | None = None
    ) -> None:
        """Process a batch (`opened`: what the workers opened of it); contain any failure so
        one bad message never stops ingest."""
        backoff = 0.5
        while True:
            try:
                self._process(batch, with_rules=True, opened=opened)
                return
            except Exception as exc:
                failure = exc
            opened = None  # retries open in this thread, on a fresh connection
            if not self._database_ok():
                if self._stop.wait(backoff):
                    return  # shutting down: nothing acked, the broker keeps it all
                backoff = min(backoff * 2, self.limits.max_backoff_s)
                continue
            if len(batch) > 1:
                log.warning("batch of %d failed (%r); retrying one by one", len(batch), failure)
                for message in batch:
                    self._handle([message])
                return
            self._handle_poison(batch[0], failure)
            return

    def _handle_poison(self, message: Incoming, failure: Exception) -> None:
        """One message fails although the database works: store it without rules if that
        works, else record it as a rejection; acknowledge it either way."""
        if self.rules is not None:
            try:
                self._process([message], with_rules=False)
                log.error("rules failed on %s (%r); stored without rules", message.topic, failure)
                return
            except Exception as exc:
                failure = exc
        log.error("cannot store message from %s: %r; rejecting it", message.topic, failure)
        try:
            self._database_ok()
            assert self._db is not None
            with self._db.transaction():
                add_rejections(
                    self._db,
                    [
                        Rejection(
                            _now_ms(), Reason.MALFORMED, message.topic, None, None,
                            len(message.payload), f"could not be stored: {failure!r}",
                        )
                    ],
                )  # fmt: skip
        except Exception:
            log.exception("cannot record the rejection either")
        self.metrics.count("rejected", Reason.MALFORMED)
        self._ack(message)

    def _process(
        self,
        batch: Sequence[Incoming],
        *,
        with_rules: bool,
        opened: Sequence[Result | None] | None = None,
    ) -> None:
        db, opener = self._db, self._opener
        assert db is not None and opener is not None
        if opened is None:
            opener.load_devices(batch)
            outcomes = [opener.classify(m) for m in batch]
        else:  # devices were loaded when the batch went to the workers
            outcomes = [opener.classify_opened(m, r) for m, r in zip(batch, opened, strict=True)]
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        rejected = [o for o in outcomes if isinstance(o, Rejected)]
        duplicates = sum(isinstance(o, Redelivered) for o in outcomes)
        now_ms = _now_ms()
        prepared = [prepare(a.opened, a.device, a.message.received_ms) for a in accepted]
        started = time.monotonic()
        stored: list[StoredReport] = []
        with db.transaction():
            ids = insert_reports(db, [p.report for p in prepared])
            seen: dict[tuple[str, str], tuple[int, int]] = {}
            for p, a in zip(prepared, accepted, strict=True):
                r = p.report
                report_id = ids.get(r.key)
                if report_id is None:  # stored meanwhile (another hub process, a redelivery)
                    if stored_digest(db, r.site, r.device, r.seq) == r.digest:
                        duplicates += 1
                    else:
                        rejected.append(
                            Rejected(a.message, Reason.REPLAY, r.site, r.device, "seq taken")
                        )
                    continue
                stored.append(
                    StoredReport(
                        id=report_id,
                        site=r.site,
                        device=r.device,
                        device_class=p.device.device_class,
                        group=p.device.group,
                        kind=a.opened.header.kind,
                        seq=r.seq,
                        time_ms=r.time_ms,
                        received_ms=r.received_ms,
                        payload=p.payload,
                    )
                )
                last = seen.get((r.site, r.device), (0, 0))
                seen[(r.site, r.device)] = (max(last[0], r.received_ms), max(last[1], r.seq))
            record_seen(db, [(s, d, ms, seq) for (s, d), (ms, seq) in seen.items()])
            add_rejections(db, [_rejection_row(o, now_ms) for o in rejected])
            if with_rules and self.rules is not None:
                self.rules.evaluate_batch(db, stored)
                for o in rejected:
                    self.rules.on_rejection(db, o.reason, o.site, o.device, now_ms)
        self.metrics.commit_seconds.observe(time.monotonic() - started)
        log.debug("committed %d message(s): %d stored", len(batch), len(stored))
        enrolls = [o for o in outcomes if isinstance(o, EnrollRequest)]
        for request in enrolls:
            self._enroll(db, request, now_ms)
        done = time.monotonic()
        for message in batch:
            self._ack(message)
            self.metrics.latency_seconds.observe(done - message.arrived)
        self._count(len(batch), len(stored), duplicates, rejected, outcomes)

    def _enroll(self, db: Database, request: EnrollRequest, now_ms: int) -> None:
        """One enrolment request in its own transaction; failures are contained and counted
        (the device retries enrolment itself)."""
        if self.enroll is None:
            log.warning("enrolment request %s ignored: no enrolment service", request.request_id)
            self.metrics.count("ignored", "no_enroll_service")
            return
        try:
            with db.transaction():
                reply = self.enroll.handle(db, request.request_id, request.message.payload, now_ms)
        except OpenError as exc:
            log.info("enrolment request %s refused: %s", request.request_id, exc)
            self.metrics.count("rejected", exc.reason)
            return
        except Exception:
            log.exception("enrolment request %s failed", request.request_id)
            self.metrics.count("rejected", "enroll_error")
            return
        if reply is not None and self.publish is not None:
            try:
                self.publish(reply[0], reply[1], False)
            except Exception:
                log.exception("cannot publish the enrolment reply to %s", reply[0])
        self.metrics.count("enrolled")

    def _count(
        self,
        size: int,
        stored: int,
        duplicates: int,
        rejected: list[Rejected],
        outcomes: Sequence[object],
    ) -> None:
        self.metrics.batch_size.observe(size)
        ignored = sum(isinstance(o, Ignored) for o in outcomes)
        for result, n in (("stored", stored), ("duplicate", duplicates), ("ignored", ignored)):
            if n:
                self.metrics.count(result, n=n)
        reasons = Counter(o.reason for o in rejected)
        for reason, n in reasons.items():
            self.metrics.count("rejected", reason, n)
        if reasons:
            log.warning("rejected %d message(s): %s", len(rejected), dict(reasons))


def _rejection_row(o: Rejected, now_ms: int) -> Rejection:
    return Rejection(
        at_ms=now_ms,
        reason=str(o.reason),
        topic=o.message.topic,
        site=o.site,
        device=o.device,
        size=len(o.message.payload),
        detail=o.detail,
    )
