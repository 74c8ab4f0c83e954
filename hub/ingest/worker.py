"""The ingest thread: takes messages off the inbox in batches and has each one committed
(hub.ingest.commit), opening the next batch in worker processes meanwhile (hub.ingest.ahead).

Failures are contained here: if the database is unreachable nothing is acknowledged and the
batch is retried with backoff; a batch that fails although the database works is retried one
message at a time, and a message that still fails is stored without rules, or else recorded
as a malformed rejection and acknowledged, so one bad message never stops ingest.

Keys: every few seconds the thread looks whether DATA/keys changed (hub.keys.HubKeys.refresh,
one stat), and whenever the keys in force change (that, SIGHUP, a key id miss) it ingests the
held envelopes the new keys open (hub.ingest.holding); also every tick, for keys another hub
process loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.ingest.ahead import Ahead, OpeningAhead
from hub.ingest.bursts import BurstLimits, Bursts
from hub.ingest.commit import Committer, now_ms
from hub.ingest.directory import CachedDirectory
from hub.ingest.holding import openable
from hub.ingest.hooks import EnrollHandler, Publish, ReportRules
from hub.ingest.inbox import Inbox
from hub.ingest.pipeline import Opener, Opening
from hub.ingest.pool import OpeningPool
from hub.keys import HubKeys
from hub.metrics import HubMetrics
from hub.mqtt import RECEIVE_MAXIMUM, Incoming
from hub.store.database import Database
from hub.store.replay_guard import StoreReplayGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How ingest batches: at most max_messages per transaction; queue bound; tick period."""

    max_messages: int = 500
    queue_size: int = 2 * RECEIVE_MAXIMUM
    tick_s: float = 30.0
    max_backoff_s: float = 10.0
    keys_check_s: float = 5.0  # how often DATA/keys is looked at for rotated keys


class IngestWorker:
    """One thread with its own database connection; start(), offer() from paho, stop()."""

    def __init__(
        self,
        database_url: str,
        keyring: HubKeys,
        *,
        ack: Callable[[Incoming], bool],
        metrics: HubMetrics,
        rules: ReportRules | None = None,
        enroll: EnrollHandler | None = None,
        publish: Publish | None = None,
        limits: BatchLimits = BatchLimits(),
        opening_processes: int = 0,
        keys_dir: Path | None = None,
        bursts: BurstLimits | None = None,
    ) -> None:
        self.database_url = database_url
        self.keyring = keyring
        self.rules = rules
        self.limits = limits
        self.metrics = metrics
        # Per thread, across reconnections: which devices are throttled (hub.ingest.bursts).
        self.bursts = Bursts(bursts or BurstLimits())
        self._committer = Committer(
            ack=ack, metrics=metrics, rules=rules, enroll=enroll, publish=publish,
            bursts=self.bursts,
        )  # fmt: skip
        self._keys_seen = -1  # the key generation whose held envelopes were last looked at
        self._stop = threading.Event()
        # When the loop last went round (or waited, on purpose, for the database): the main
        # loop stops pinging systemd's watchdog when this is older than STALL_S.
        self._beat = time.monotonic()
        self._inbox = Inbox(limits.queue_size, metrics, self._stop)
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._db: Database | None = None
        self._opener: Opener | None = None
        # Worker processes for the CPU part of opening (owned by the ingest thread).
        self._ahead: OpeningAhead | None = None
        if opening_processes > 0:
            if keys_dir is None:
                raise ValueError("opening processes need the keys directory")
            pool = OpeningPool(keys_dir, opening_processes, metrics.opening_replaced.inc)
            self._ahead = OpeningAhead(pool)

    def offer(self, message: Incoming) -> None:
        """Hand a message over (paho's thread): see hub.ingest.inbox."""
        self._inbox.offer(message)

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
        return self._ahead.pool.pids if self._ahead is not None else []

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def stalled_s(self, now: float) -> float:
        """Seconds since the loop last went round (monotonic clock): a commit, a rules tick or a
        database call that hangs makes this grow while the thread is still alive."""
        return max(0.0, now - self._beat)

    def _connect(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception as exc:
                log.debug("closing a broken database connection: %r", exc)
        self._db = None
        db = Database(self.database_url)
        self._db = db
        self._opener = Opener(
            CachedDirectory(db), self.keyring, StoreReplayGuard(db), bursts=self.bursts
        )

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
        pool = self._ahead.pool if self._ahead is not None else None
        if pool is not None:
            pool.start()
        try:
            backoff = 0.5
            while not self._database_ok():
                self._beat = time.monotonic()  # waiting for the database is not a hang
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.limits.max_backoff_s)
            self._loop()
        finally:
            if pool is not None:
                pool.stop()
            if self._db is not None:
                self._db.close()
                self._db = None

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.limits.tick_s
        next_keys = 0.0
        ahead: Ahead | None = None
        while not self._stop.is_set():
            self._beat = time.monotonic()
            if time.monotonic() >= next_keys:
                next_keys = time.monotonic() + self.limits.keys_check_s
                self.keyring.refresh(0.0)
            if self.keyring.generation != self._keys_seen:
                self._release_held()
            batch = self._inbox.take(self.limits.max_messages, wait=ahead is None)
            if self._ahead is None:
                if batch:
                    self._handle(batch)
            else:
                # Workers open this batch while this thread commits the previous one. A worker
                # gets a new chunk only once its last results are read: it could not take one
                # while blocked writing them.
                opened = self._collect(ahead) if ahead is not None else None
                assert self._opener is not None
                opening = self._ahead.send(batch, self._opener) if batch else None
                if ahead is not None:
                    self._handle(ahead.batch, opened)
                ahead = opening
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.limits.tick_s
                self._keys_seen = -1  # held envelopes another hub process may open now
                if self.rules is not None:
                    self._tick()
        if ahead is not None:  # taken off the queue: finish it (commit, ack)
            self._handle(ahead.batch, self._collect(ahead))

    def _release_held(self, limit: int = 500) -> None:
        """Ingest the held envelopes the loaded keys open, a batch at a time. One that fails to
        commit stays held (logged), and is tried again at the next change of keys or tick."""
        self._keys_seen = self.keyring.generation
        while not self._stop.is_set():
            assert self._db is not None
            try:
                messages, ids = openable(self._db, self.keyring, limit)
            except Exception as exc:
                log.error("cannot read the held envelopes: %r", exc)
                return
            if not messages or not self._commit_released(messages, ids) or len(ids) < limit:
                return

    def _commit_released(self, messages: Sequence[Incoming], ids: Sequence[int]) -> bool:
        """Commit held envelopes read back (one by one if the batch fails); False if any of
        them could not be committed."""
        assert self._db is not None and self._opener is not None
        try:
            self._committer.commit(self._db, self._opener, messages, with_rules=True, released=ids)
            log.info("opened and ingested %d held envelope(s)", len(ids))
            return True
        except Exception as exc:
            failure = exc
        if not self._database_ok() or len(ids) == 1:
            log.error("cannot ingest held envelope %s (%r); it stays held", ids, failure)
            return False
        return all([self._commit_released([m], [i]) for m, i in zip(messages, ids, strict=True)])

    def _collect(self, ahead: Ahead) -> list[Opening] | None:
        assert self._ahead is not None and self._opener is not None
        return self._ahead.collect(ahead, self._opener)

    def _tick(self) -> None:
        assert self._db is not None and self.rules is not None
        try:
            self.rules.tick(self._db, now_ms())  # the engine runs its own transaction
        except Exception:
            log.exception("rules tick failed")

    def _commit(
        self, batch: Sequence[Incoming], with_rules: bool, opened: Sequence[Opening] | None
    ) -> None:
        assert self._db is not None and self._opener is not None
        self._committer.commit(self._db, self._opener, batch, with_rules=with_rules, opened=opened)

    def _handle(self, batch: Sequence[Incoming], opened: Sequence[Opening] | None = None) -> None:
        """Commit a batch (`opened`: what screening and the workers found of it); contain any
        failure so one bad message never stops ingest."""
        backoff = 0.5
        while True:
            try:
                self._commit(batch, True, opened)
                return
            except Exception as exc:
                failure = exc
            opened = None  # retries open in this thread, on a fresh connection
            self._beat = time.monotonic()
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
                self._commit([message], False, None)
                log.error("rules failed on %s (%r); stored without rules", message.topic, failure)
                return
            except Exception as exc:
                failure = exc
        self._database_ok()
        self._committer.reject(self._db, message, failure)
