"""health: a device says part of its filtering is not working, e.g. hedgerow-dns serving
without a list it could not fetch on its first start (event type "health", docs/protocol.md).

`detail.problem` is "missing" (the list has no copy at all: its category is not filtered, or,
for a statutory list, every name is blocked until it loads) or "recovered" (it loaded): that
closes the alert by itself. The key is the list's category and source, so each list is one
alert however often the device says so.
"""

from __future__ import annotations

import hashlib
from typing import Any

from common.wire.header import Kind
from hub.alerts import Finding, find_active, report_finding, resolve
from hub.model import StoredReport
from hub.rules.settings import RulesConfig
from hub.rules.wording import device_label
from hub.store import Database

RULE = "health"
EVENT = "health"
MAX_SHOWN = 200  # what an alert sentence shows of a list source


def _detail(payload: dict[str, Any]) -> dict[str, Any]:
    detail = payload.get("detail")
    return detail if isinstance(detail, dict) else {}


def _key(detail: dict[str, Any]) -> str:
    """One alert per list: its category and a digest of its source (sources can be long)."""
    source = str(detail.get("list", ""))
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return f"list_missing:{detail.get('category', '')}:{digest}"


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding for a "health" event saying a list is missing; a "recovered" one closes the
    open alert of that list."""
    h = rules.health
    if not h.enabled or report.kind != Kind.EVENT or report.payload.get("type") != EVENT:
        return []
    detail = _detail(report.payload)
    key = _key(detail)
    problem = detail.get("problem")
    if problem == "recovered":
        found = find_active(db, report.site, report.device, RULE, key)
        if found is not None:
            resolve(db, found.id, report.received_ms, "the device loaded the list")
        return []
    if problem != "missing":
        return []
    statutory = detail.get("statutory") is True
    severity = h.statutory_missing_severity if statutory else h.list_missing_severity
    if severity == 0:
        return []
    label = device_label(report.site, report.device, report.device_class)
    category = str(detail.get("category", "?"))
    source = str(detail.get("list", "?"))[:MAX_SHOWN]
    if statutory:
        effect = (
            "it is a statutory list, so the filter blocks every name until it loads "
            "(the school has no web access)"
        )
    else:
        effect = f"'{category}' is not being filtered until it loads"
    summary = (
        f"{label} cannot load its {category} list {source} (no copy at all, retrying): {effect}."
    )
    return [
        report_finding(
            report, rule=RULE, severity=severity, group=report.group, key=key, summary=summary
        )
    ]
