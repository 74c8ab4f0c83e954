"""The device side of delivery receipts (docs/protocol.md, "Delivery receipts"): which spooled
reports the hub has receipted, when to send the rest again, and when to declare a floor.

A report stays in the spool until a verified receipt covers it. What the broker acknowledged
but no receipt covers is sent again, in order from the oldest held, once `resend_after_s` has
passed without the receipt moving; each round that brings no progress doubles the wait, up to
MAX_RESEND_AFTER_S, and progress brings it back. When the hub waits for a seq this device does
not hold (its will, a block skipped at a restart, a report its full spool refused), the device
declares a floor: a `spool_floor` event saying it holds nothing unreceipted below its lowest
held seq.

Receipts are checked here, with the hub signing keys from enrolment: one that does not verify,
is for another site or device, or covers a seq this device has not issued yet (left from before
a reset of its numbering) is ignored and counted. Owned by the publisher's worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.identity import Identity
from common.receipt import open_receipt
from common.wire.errors import OpenError

log = logging.getLogger(__name__)

DEFAULT_RESEND_AFTER_S = 60.0
MAX_RESEND_AFTER_S = 900.0


@dataclass(frozen=True, slots=True)
class ReceiptCounters:
    """What receipts did, for the publisher's stats."""

    accepted: int  # verified receipts applied
    ignored: int  # refused: forged, for someone else, malformed, or ahead of what was issued
    through: int | None  # the hub's latest verified `through` (None: no receipt yet)
    rounds: int  # re-send rounds begun
    declarations: int  # spool floors declared


class ReceiptTracker:
    """Receipt state of one device's publisher (not thread-safe: the worker thread owns it)."""

    def __init__(
        self,
        identity: Identity,
        resend_after_s: float = DEFAULT_RESEND_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if resend_after_s <= 0:
            raise ValueError("resend_after_s must be positive")
        self._identity = identity
        self._resend_after_s = resend_after_s
        self._clock = clock
        self.through: int | None = None
        self._best = -1  # the highest `through` seen: progress is a receipt above it
        self._acked: set[int] = set()  # held seqs the broker acknowledged, not yet receipted
        self._due: float | None = None  # when a re-send round is due
        self._rounds_idle = 0  # rounds since the last progress (the backoff's exponent)
        self._declared: tuple[int, int] | None = None  # (event seq, floor) not yet receipted
        self._accepted = 0
        self._ignored = 0
        self._rounds = 0
        self._declarations = 0

    def counters(self) -> ReceiptCounters:
        """A snapshot of the counters."""
        return ReceiptCounters(
            self._accepted, self._ignored, self.through, self._rounds, self._declarations
        )

    def _wait(self) -> float:
        backoff = float(2 ** min(self._rounds_idle, 20))
        return min(self._resend_after_s * backoff, max(MAX_RESEND_AFTER_S, self._resend_after_s))

    def verify(self, data: bytes, issued_high: int) -> int | None:
        """The `through` of a receipt for this device, or None (logged, counted) if it is not
        one to trust (`issued_high`: the highest seq this device has issued)."""
        ident = self._identity
        try:
            receipt = open_receipt(
                data, hub_keys=ident.hub_verify_keys, site=ident.site, device=ident.device
            )
        except OpenError as exc:
            self._ignore(f"refused ({exc})")
            return None
        if receipt.through > issued_high:
            # Never legitimate: left from before this device's numbering started again.
            self._ignore(f"through {receipt.through} is past seq {issued_high}")
            return None
        self._accepted += 1
        return receipt.through

    def _ignore(self, why: str) -> None:
        self._ignored += 1
        if self._ignored == 1 or self._ignored % 100 == 0:
            log.warning("ignoring a receipt: %s (%d ignored so far)", why, self._ignored)

    def acked(self, seq: int) -> None:
        """The broker acknowledged a held report: a receipt should follow."""
        if self.through is not None and seq <= self.through:
            return
        self._acked.add(seq)
        if self._due is None:
            self._due = self._clock() + self._wait()

    def receipted(self, through: int) -> None:
        """A verified receipt: every seq up to `through` is processed at the hub."""
        self.through = through
        self._acked = {s for s in self._acked if s > through}
        if self._declared is not None and self._declared[0] <= through:
            self._declared = None
        if through > self._best:
            self._best = through
            self._rounds_idle = 0
            self._due = self._clock() + self._wait() if self._acked else None

    def resend_due(self) -> bool:
        """True when acknowledged reports have waited too long for a receipt."""
        return bool(self._acked) and self._due is not None and self._clock() >= self._due

    def begin_round(self) -> None:
        """The publisher starts sending every held report again, oldest first."""
        self._rounds += 1
        self._rounds_idle += 1
        self._acked.clear()
        self._due = None  # set again by the first acknowledgement of the round
        log.info("re-sending reports the hub has not receipted (round %d)", self._rounds)

    def floor_to_declare(self, lowest_held: int | None) -> int | None:
        """The floor to declare now, if the hub waits for a seq below `lowest_held` (which
        this device does not hold) and no declaration of it is pending; else None."""
        if self.through is None or lowest_held is None or lowest_held <= self.through + 1:
            return None
        floor = lowest_held - 1
        if self._declared is not None and self._declared[1] >= floor:
            return None
        return floor

    def declared(self, event_seq: int, floor: int) -> None:
        """A floor event was spooled with this seq."""
        self._declared = (event_seq, floor)
        self._declarations += 1
