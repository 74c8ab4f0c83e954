"""Values the hub's parts hand to each other: stored reports, devices, alerts.

Ingest produces StoredReport; rules consume it and produce Alert; notifications and the CLI
read Alert. Keeping them here lets each part be written and tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.wire.header import Kind

DEVICE_CLASSES = ("pupil-laptop", "staff-laptop", "sinkhole")
ALERT_STATUSES = ("open", "acknowledged", "closed")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as the hub knows it (the devices table)."""

    site: str
    device: str
    device_class: str
    group: str | None
    verify_key: bytes
    enrolled_ms: int
    revoked_ms: int | None = None
    last_seen_ms: int | None = None
    hostname: str | None = None
    counts_only: bool = False
    beacon_key: bytes | None = None
    policy_version: int = 0


@dataclass(frozen=True, slots=True)
class StoredReport:
    """An envelope that passed the opening pipeline and was written to the reports table."""

    id: int
    site: str
    device: str
    device_class: str
    group: str | None
    kind: Kind
    seq: int
    time_ms: int  # the device's clock (header)
    received_ms: int  # the hub's clock
    payload: dict[str, Any]
    # Blocked attempts per category (hub.rules.attempts.blocked_attempts of the payload) when
    # ingest has worked them out already; None: the rules work them out.
    attempts: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert row; its JSON form (to_json) is a contract of the CLI and the dashboard."""

    id: int
    rule: str
    severity: int  # 1 information ... 5 a child may be at risk now
    site: str
    device: str
    device_class: str | None
    group: str | None
    status: str
    first_seen_ms: int
    last_seen_ms: int
    count: int
    summary: str  # a sentence a person can read
    evidence: tuple[int, ...] = field(default_factory=tuple)  # report ids
    dedup_key: str = ""

    def to_json(self) -> dict[str, Any]:
        """The documented JSON fields (times as ISO 8601 UTC)."""
        from datetime import UTC, datetime

        def iso(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")

        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "site": self.site,
            "device": self.device,
            "device_class": self.device_class,
            "group": self.group,
            "status": self.status,
            "first_seen": iso(self.first_seen_ms),
            "last_seen": iso(self.last_seen_ms),
            "count": self.count,
            "summary": self.summary,
            "evidence": list(self.evidence),
        }
