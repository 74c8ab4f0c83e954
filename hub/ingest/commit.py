"""One batch's transaction: classify its messages, insert the accepted reports (with their
blocked and attempts rows), the devices' last seen, the held envelopes and the refusals
(counted per minute, a few kept in full: hub.ingest.bursts), run the rules over the batch,
commit; only then acknowledge every message, and count them.

Why nothing is lost: a message is acknowledged only after the commit that stored it, and the
hub's MQTT session is persistent, so the broker redelivers anything unacknowledged when the hub
comes back. Why nothing is stored twice: (site, device, seq) is unique and a redelivered copy
is recognised (same digest) and acknowledged without a second row.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from common.wire.errors import OpenError, Reason
from hub.errors import StoreError
from hub.ingest.bursts import THROTTLED, Bursts
from hub.ingest.holding import hold_outcomes
from hub.ingest.hooks import EnrollHandler, Publish, ReportRules
from hub.ingest.pipeline import (
    Accepted,
    EnrollRequest,
    Held,
    Ignored,
    Opener,
    Opening,
    Outcome,
    Redelivered,
    Rejected,
    Throttled,
)
from hub.ingest.record import prepare
from hub.metrics import HubMetrics
from hub.model import StoredReport
from hub.mqtt import Incoming
from hub.store.database import Database
from hub.store.devices import record_seen
from hub.store.held import HeldBounds, release
from hub.store.rejections import Rejection, add_rejection_counts, add_rejections
from hub.store.reports import insert_reports, stored_digest

log = logging.getLogger(__name__)
DEFAULT_HELD_BOUNDS = HeldBounds()


def now_ms() -> int:
    """The hub's wall clock in milliseconds."""
    return int(time.time() * 1000)


class Committer:
    """Writes batches on the ingest thread's connection; raises on any failure (nothing is
    acknowledged then), for the ingest thread to retry or contain."""

    def __init__(
        self,
        *,
        ack: Callable[[Incoming], bool],
        metrics: HubMetrics,
        rules: ReportRules | None,
        enroll: EnrollHandler | None,
        publish: Publish | None,
        bursts: Bursts | None = None,
        held_bounds: HeldBounds = DEFAULT_HELD_BOUNDS,
    ) -> None:
        self._ack = ack
        self.metrics = metrics
        self.rules = rules
        self.enroll = enroll
        self.publish = publish
        self.bursts = bursts if bursts is not None else Bursts()
        self.held_bounds = held_bounds

    def commit(
        self,
        db: Database,
        opener: Opener,
        batch: Sequence[Incoming],
        *,
        with_rules: bool,
        opened: Sequence[Opening] | None = None,
        released: Sequence[int] = (),
    ) -> None:
        """Classify, store, run the rules, commit, acknowledge (`opened`: what is already
        known of each message, or None to classify the whole batch here; `released`: the
        held_envelopes rows the batch was read from, deleted in its transaction)."""
        if opened is None:
            opener.load_devices(batch)
            outcomes = [opener.classify(m) for m in batch]
        else:  # devices were loaded when the batch was screened
            outcomes = [opener.classify_opened(m, o) for m, o in zip(batch, opened, strict=True)]
        accepted = [o for o in outcomes if isinstance(o, Accepted)]
        rejected = [o for o in outcomes if isinstance(o, Rejected)]
        throttled = [o for o in outcomes if isinstance(o, Throttled)]
        held = [o for o in outcomes if isinstance(o, Held)]
        duplicates = sum(isinstance(o, Redelivered) for o in outcomes)
        at_ms = now_ms()
        prepared = [prepare(a.opened, a.device, a.message.received_ms) for a in accepted]
        started = time.monotonic()
        stored: list[StoredReport] = []
        with db.transaction():
            release(db, released)  # before holding: one that is still unopenable is held anew
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
                        attempts=p.attempts,
                    )
                )
                last = seen.get((r.site, r.device), (0, 0))
                seen[(r.site, r.device)] = (max(last[0], r.received_ms), max(last[1], r.seq))
            record_seen(db, [(s, d, ms, seq) for (s, d), (ms, seq) in seen.items()])
            over = hold_outcomes(db, held, self.held_bounds)  # refused: no room left
            self._record_refusals(db, [*rejected, *over], throttled, at_ms)
            if with_rules and self.rules is not None:
                self.rules.evaluate_batch(db, stored)
                for o in (*rejected, *over):
                    self.rules.on_rejection(db, o.reason, o.site, o.device, at_ms)
        self.metrics.commit_seconds.observe(time.monotonic() - started)
        log.debug("committed %d message(s): %d stored", len(batch), len(stored))
        for request in (o for o in outcomes if isinstance(o, EnrollRequest)):
            self._enroll(db, request, at_ms)
        done = time.monotonic()
        for message in batch:
            self._ack(message)
            self.metrics.latency_seconds.observe(done - message.arrived)
        self._count(len(batch), len(stored), duplicates, rejected, outcomes)
        self._count_held(len(released), len(held) - len(over), len(over), len(throttled))

    def _record_refusals(
        self, db: Database, rejected: Sequence[Rejected], throttled: Sequence[Throttled], at_ms: int
    ) -> None:
        """Add the batch's refusals and throttled drops to the per-minute counts (one statement)
        and keep the first few of each minute in full (hub.ingest.bursts)."""
        claims = [(o.site, o.device, o.reason) for o in rejected]
        claims += [(o.site, o.device, THROTTLED) for o in throttled]
        if not claims:
            return
        tally = self.bursts.tally(claims, at_ms)
        rows = [_rejection_row(o, at_ms) for o in rejected]
        rows += [
            Rejection(at_ms, THROTTLED, o.message.topic, o.site, o.device,
                      len(o.message.payload), "dropped unopened: the device's refusals burst")
            for o in throttled
        ]  # fmt: skip
        add_rejections(
            db, [r for r, keep in zip(rows, tally.sampled, strict=True) if keep], sampled=True
        )
        add_rejection_counts(db, tally.counts)

    def _count_held(self, released: int, held: int, over: int, throttled: int) -> None:
        for result, reason, n in (
            ("released", "", released),
            ("held", "wrong_key", held),
            ("dropped", "held_full", over),
            ("dropped", THROTTLED, throttled),
        ):
            if n:
                self.metrics.count(result, reason, n)
        if over:
            log.warning("held envelopes full: %d authentic envelope(s) refused as wrong_key", over)

    def reject(self, db: Database | None, message: Incoming, failure: Exception) -> None:
        """A message that cannot be stored although the database works: record it as a
        malformed rejection (if even that fails, log it) and acknowledge it."""
        log.error("cannot store message from %s: %r; rejecting it", message.topic, failure)
        try:
            if db is None:
                raise StoreError("no database connection")
            with db.transaction():
                add_rejections(
                    db,
                    [
                        Rejection(
                            now_ms(), Reason.MALFORMED, message.topic, None, None,
                            len(message.payload), f"could not be stored: {failure!r}",
                        )
                    ],
                )  # fmt: skip
        except Exception:
            log.exception("cannot record the rejection either")
        self.metrics.count("rejected", Reason.MALFORMED)
        self._ack(message)

    def _enroll(self, db: Database, request: EnrollRequest, at_ms: int) -> None:
        """One enrolment request in its own transaction; failures are contained and counted
        (the device retries enrolment itself)."""
        if self.enroll is None:
            log.warning("enrolment request %s ignored: no enrolment service", request.request_id)
            self.metrics.count("ignored", "no_enroll_service")
            return
        try:
            with db.transaction():
                reply = self.enroll.handle(db, request.request_id, request.message.payload, at_ms)
        except OpenError as exc:
            log.info("enrolment request %s refused: %s", request.request_id, exc)
            self.metrics.count("rejected", exc.reason)
            return
        except Exception:
            log.exception("enrolment request %s failed", request.request_id)
            self.metrics.count("rejected", "enroll_error")
            return
        if self.publish is not None:
            try:
                self.publish(reply.topic, reply.data, reply.final)
            except Exception:
                log.exception("cannot publish the enrolment reply to %s", reply.topic)
        self.metrics.count("enrolled")

    def _count(
        self,
        size: int,
        stored: int,
        duplicates: int,
        rejected: list[Rejected],
        outcomes: Sequence[Outcome],
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


def _rejection_row(o: Rejected, at_ms: int) -> Rejection:
    return Rejection(
        at_ms=at_ms,
        reason=str(o.reason),
        topic=o.message.topic,
        site=o.site,
        device=o.device,
        size=len(o.message.payload),
        detail=o.detail,
    )
