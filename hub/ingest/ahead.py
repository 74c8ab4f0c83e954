"""Opening a batch ahead: the ingest thread screens a batch and sends its jobs to the opening
workers (hub.ingest.pool), commits the previous batch while they work, then collects their
results in arrival order for Opener.classify_opened.

Screening (Opener.screen) refuses here what fails before the signature, so no worker round
trip is spent on it, and marks verify-only what the replay window already holds. A copy of an
envelope sent in this batch or the one before, which the replay guard cannot know of yet
(not accepted until its batch commits), is marked verify-only too: if the first copy is
accepted it is a duplicate, and if not, classify_opened opens it in this thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from hub.ingest.opening import Job, Reply, result_of
from hub.ingest.pipeline import Opener, Opening, Outcome, ToOpen
from hub.ingest.pool import OpeningPool, Submitted
from hub.mqtt import Incoming

log = logging.getLogger(__name__)
SeqKey = tuple[str, str, int]  # (site, device, seq)


@dataclass(frozen=True, slots=True)
class Ahead:
    """A batch whose jobs the workers are opening while the previous one commits."""

    batch: Sequence[Incoming]
    opener: Opener  # results are used only with the opener (and connection) they were made by
    screened: Sequence[Outcome | ToOpen | None] | None  # None: screening failed, open it here
    submitted: Submitted | None  # None: the pool declined, open the jobs here


def screen_batch(
    opener: Opener, batch: Sequence[Incoming], previous: set[SeqKey]
) -> tuple[list[Outcome | ToOpen | None], set[SeqKey]]:
    """Screen each message (devices loaded first); a job whose seq was sent in this batch or
    in `previous` becomes verify-only. Returns what screening found of each message, and the
    seqs sent. Raises StoreError."""
    opener.load_devices(batch)
    screened = [opener.screen(m) for m in batch]
    sent: set[SeqKey] = set()
    for i, item in enumerate(screened):
        if isinstance(item, ToOpen):
            if item.seq_key in sent or item.seq_key in previous:
                screened[i] = replace(item, job=(*item.job[:2], True))
            sent.add(item.seq_key)
    return screened, sent


def jobs_of(screened: Sequence[Outcome | ToOpen | None]) -> list[Job]:
    """The workers' jobs, in order."""
    return [item.job for item in screened if isinstance(item, ToOpen)]


def merge(
    screened: Sequence[Outcome | ToOpen | None], replies: Sequence[Reply] | None
) -> list[Opening]:
    """What is known of each message: the workers' results in place of the jobs (None, to
    open in this thread, if there are no replies)."""
    if replies is None:
        return [None if isinstance(item, ToOpen) else item for item in screened]
    taken = iter(replies)
    return [
        result_of(next(taken), item.header) if isinstance(item, ToOpen) else item
        for item in screened
    ]


class OpeningAhead:
    """send() a batch, then collect() it, from the ingest thread only."""

    def __init__(self, pool: OpeningPool) -> None:
        self.pool = pool
        self._previous: set[SeqKey] = set()  # seqs sent in the batch before

    def send(self, batch: Sequence[Incoming], opener: Opener) -> Ahead:
        """Screen the batch and send its jobs to the workers."""
        try:
            screened, self._previous = screen_batch(opener, batch, self._previous)
        except Exception as exc:  # the database failed: the commit deals with it in this thread
            log.warning("cannot screen a batch for the opening workers: %r", exc)
            self._previous = set()
            return Ahead(batch, opener, None, None)
        jobs = jobs_of(screened)
        return Ahead(batch, opener, screened, self.pool.submit(jobs) if jobs else None)

    def collect(self, ahead: Ahead, opener: Opener) -> list[Opening] | None:
        """What is known of each message of the batch, or None to classify the whole batch in
        this thread."""
        if ahead.screened is None or ahead.opener is not opener:
            return None
        results = None if ahead.submitted is None else self.pool.results(ahead.submitted)
        return merge(ahead.screened, results)
