"""From an opened envelope to the rows the store writes: DfE log fields, blocked rows, and
counts-only stripping for staff devices (their names and domains never reach the disk)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.wire.envelope import Opened
from common.wire.header import Kind
from common.wire.topics import UP_KINDS
from hub.model import DeviceInfo
from hub.rules.attempts import blocked_attempts
from hub.rules.wording import client_identity, client_name
from hub.store.reports import BlockedEntry, NewReport

BLOCKED_EVENT = "blocked"  # an event of this type is one blocked request


@dataclass(frozen=True, slots=True)
class Prepared:
    """A report ready to insert, and the payload as stored (what the rules see)."""

    report: NewReport
    payload: dict[str, Any]
    device: DeviceInfo
    attempts: dict[str, int]  # blocked attempts per category (blocked_attempts)


def _clean(value: Any) -> str | None:
    # PostgreSQL text cannot hold NUL; the JSON body escapes it, plain columns must drop it.
    return value.replace("\x00", "") if isinstance(value, str) else None


# What of an event's detail a counts-only device's event keeps: what the rules need and
# nothing that names a person or what they looked at (a site change, a tamper, the device's own
# health; a concern is a deliberate report and keeps its words).
COUNTS_ONLY_DETAIL = {
    "site_state": ("state", "previous", "user_logged_in", "user_active", "network", "reason"),
    "tamper": ("what", "restored"),
    "spool_dropped": ("count", "oldest_at", "newest_at"),
    "health": ("problem", "recovered", "list", "category", "statutory", "error"),
    "bypass": ("method", "port", "proto"),
    "concern": ("text",),
}


def counts_only(kind: Kind, document: dict[str, Any]) -> dict[str, Any]:
    """The document without names or domains: blocked names emptied, top_allowed, the user
    and the names of programs dropped, event names emptied and event details cut to
    COUNTS_ONLY_DETAIL; counts and categories kept."""
    doc = dict(document)
    client = doc.get("client")
    if isinstance(client, dict) and "user" in client:
        doc["client"] = {k: v for k, v in client.items() if k != "user"}
    if kind is Kind.SUMMARY:
        doc["blocked"] = [{**entry, "name": ""} for entry in doc.get("blocked", [])]
        doc.pop("top_allowed", None)
        activity = doc.get("activity")
        if isinstance(activity, dict):
            activity = {k: v for k, v in activity.items() if k != "user"}
            started = activity.pop("processes_new", None)
            if isinstance(started, dict):
                activity["processes_new_count"] = sum(
                    v for v in started.values() if isinstance(v, int)
                )
            doc["activity"] = activity
        doc["counts_only"] = True
    elif kind is Kind.EVENT:
        if "name" in doc:
            doc["name"] = ""
        detail = doc.pop("detail", None)
        keep = COUNTS_ONLY_DETAIL.get(str(doc.get("type")), ())
        if isinstance(detail, dict) and keep:
            doc["detail"] = {k: v for k, v in detail.items() if k in keep}
    return doc


def blocked_entries(kind: Kind, document: dict[str, Any]) -> tuple[BlockedEntry, ...]:
    """One entry per blocked name of a summary, or one for a blocked event."""
    if kind is Kind.SUMMARY:
        return tuple(
            BlockedEntry(_clean(b["name"]) or "", _clean(b["category"]) or "", int(b["count"]))
            for b in document.get("blocked", [])
        )
    if kind is Kind.EVENT and document.get("type") == BLOCKED_EVENT:
        return (
            BlockedEntry(
                _clean(document.get("name")) or "",
                _clean(document.get("category")) or "",
                int(document.get("count", 1)),
            ),
        )
    return ()


def prepare(opened: Opened, device: DeviceInfo, received_ms: int) -> Prepared:
    """Build the reports row (and its blocked rows) for an accepted envelope. The body is the
    JSON text the device sealed, or for a counts-only device the document without names."""
    header = opened.header
    document = opened.payload
    stripped = device.counts_only or document.get("counts_only") is True
    if stripped:
        document = counts_only(header.kind, document)
    if stripped or not opened.body:
        body = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    else:  # as sealed: no second encoding (UTF-8, since common.wire.payload decoded it)
        body = opened.body.decode("utf-8")
    client = document.get("client")
    client = client if isinstance(client, dict) else {}
    attempts = blocked_attempts(document)
    report = NewReport(
        site=header.site,
        device=header.device,
        seq=header.seq,
        kind=UP_KINDS[header.kind],
        digest=opened.digest,
        time_ms=header.time_ms,
        received_ms=received_ms,
        client_ip=_clean(client.get("ip")),
        client_user=_clean(client.get("user")),
        body=body,
        blocked=blocked_entries(header.kind, document),
        attempts=tuple((_clean(category) or "", n) for category, n in attempts.items()),
        # whose attempts they are, as the rules group them (hub.rules.attempts)
        client_key=client_identity(client) if client else None,
        client_name=client_name(client),
        client_group=_clean(client.get("group")),
    )
    return Prepared(report, document, device, attempts)
