"""What ingest calls out to: the rules engine, the enrolment service and what follows a commit
(other packages).

Kept as Protocols so ingest can be built and tested without them; hub/daemon.py wires the
real ones (hub.rules.engine.RuleEngine, hub.enroll.answer.EnrollService,
hub.receipts.ReceiptPublisher).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hub.model import StoredReport
from hub.mqtt import Incoming
from hub.store.database import Database

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain (QoS 1)
# Ingest acknowledges each message only after the transaction that decided it has committed
# (stored, a duplicate, refused, held): False if the connection that delivered it is gone.
Ack = Callable[[Incoming], bool]


class CommitListener(Protocol):
    """Told of each message once the transaction that decided it has committed (delivery
    receipts). Called on the ingest thread: it must return at once and never raise."""

    def committed(self, message: Incoming) -> None:
        """One message, committed and being acknowledged."""


def acking(ack: Ack, listener: CommitListener) -> Ack:
    """Ingest's `ack`, telling `listener` of each message as well: acknowledgement follows
    the commit, so this is the one place every decided message passes after it."""

    def ack_and_tell(message: Incoming) -> bool:
        acked = ack(message)
        listener.committed(message)
        return acked

    return ack_and_tell


class ReportRules(Protocol):
    """Evaluates stored reports and rejections inside ingest's batch transaction."""

    def evaluate_batch(self, db: Database, reports: Sequence[StoredReport]) -> None:
        """Raise or update alerts for a batch of stored reports, in order (same transaction as
        their insert)."""

    def on_rejection(
        self, db: Database, reason: str, site: str | None, device: str | None, now_ms: int
    ) -> None:
        """Note one refused message (bursts become a security alert)."""

    def tick(self, db: Database, now_ms: int) -> None:
        """Time-based rules (silent devices and the like), about every 30 s, outside any
        batch: the engine begins and commits its own transaction."""


class EnrollHandler(Protocol):
    """Handles one enrolment request inside its own transaction."""

    def handle(self, db: Database, request_id: str, data: bytes, now_ms: int) -> EnrollAnswer:
        """The answer to publish after commit (retained when final)."""


class EnrollAnswer(Protocol):
    """A sealed enrolment answer: its reply topic, bytes, and whether it is final (ok or
    refused: published retained, with an expiry) or "busy" (not retained)."""

    @property
    def topic(self) -> str:
        """The reply topic."""

    @property
    def data(self) -> bytes:
        """The sealed answer."""

    @property
    def final(self) -> bool:
        """True unless the device is to ask again."""
