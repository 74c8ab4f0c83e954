"""What ingest calls out to: the rules engine and the enrolment service (other packages).

Kept as Protocols so ingest can be built and tested without them; hub/daemon.py wires the
real ones (hub.rules.engine.RuleEngine, hub.enroll.answer.EnrollService).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hub.model import StoredReport
from hub.store.database import Database

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain (QoS 1)


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

    def handle(
        self, db: Database, request_id: str, data: bytes, now_ms: int
    ) -> tuple[str, bytes] | None:
        """Return (reply topic, payload) to publish after commit, or None."""
