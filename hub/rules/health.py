"""health: a device says part of its filtering or reporting is not working (event types "health"
and "spool_dropped", docs/protocol.md section 6.4).

Lists (hedgerow-dns): `detail.problem` is "missing" (the list has no copy at all: its category
is not filtered, or, for a statutory list, every name is blocked until it loads) or "recovered"
(it loaded): that closes the alert by itself. The key is the list's category and source, so
each list is one alert however often the device says so.

The laptop agent's parts: `detail.problem` names the kind ("sniffer_unavailable",
"netlink_unavailable", "filter_failed", or one this hub does not know yet) with `detail.error`;
"<kind>_recovered" (or the kind with `detail.recovered = true`) closes it. One alert per kind
per device.

"spool_dropped": the laptop's spool was full and it dropped its oldest routine reports (summaries
and heartbeats; never an urgent event), so that time's activity never reaches the hub. One alert per device; each drop adds to it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from common.wire.header import Kind
from hub.alerts import Finding, find_active, report_finding, resolve
from hub.model import StoredReport
from hub.rules.settings import HealthRule, RulesConfig
from hub.rules.wording import device_label, plural, when
from hub.store import Database

RULE = "health"
EVENT = "health"
SPOOL_DROPPED = "spool_dropped"
MAX_SHOWN = 200  # what an alert sentence shows of a list source or an error
LIST_PROBLEMS = ("missing", "recovered")  # the DNS filter's, about one list
RECOVERED = "_recovered"
_KIND = re.compile(r"[a-z0-9_]{1,40}")  # a part's problem kind becomes the alert key
# What each known kind of the laptop agent's problems means, for the sentence.
_EFFECTS = {
    "sniffer_unavailable": (
        "its packet sniffer is not running, so ways round the filter are seen only from its "
        "connection list, not from DNS, DoT and DoQ packets"
    ),
    "netlink_unavailable": (
        "it cannot hear network changes, so it re-checks whether it is on site only every "
        "60 seconds"
    ),
    "filter_failed": (
        "its own DNS filter failed: the laptop fails closed, so it may have no working DNS "
        "(and no web access) until the filter recovers"
    ),
}


def _detail(payload: dict[str, Any]) -> dict[str, Any]:
    detail = payload.get("detail")
    return detail if isinstance(detail, dict) else {}


def _key(detail: dict[str, Any]) -> str:
    """One alert per list: its category and a digest of its source (sources can be long)."""
    source = str(detail.get("list", ""))
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return f"list_missing:{detail.get('category', '')}:{digest}"


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding for a "health" event saying a list or a part is not working (its recovery
    closes the open alert), or for a "spool_dropped" event."""
    h = rules.health
    if not h.enabled or report.kind != Kind.EVENT:
        return []
    event = report.payload.get("type")
    if event == SPOOL_DROPPED:
        return _spool_dropped(rules, report)
    if event != EVENT:
        return []
    detail = _detail(report.payload)
    problem = detail.get("problem")
    if problem in LIST_PROBLEMS:
        return _list(db, h, report, detail, str(problem))
    if isinstance(problem, str) and _KIND.fullmatch(problem):
        return _part(db, h, report, detail, problem)
    return []


def _list(
    db: Database, h: HealthRule, report: StoredReport, detail: dict[str, Any], problem: str
) -> list[Finding]:
    key = _key(detail)
    if problem == "recovered":
        _resolve(db, report, key, "the device loaded the list")
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


def _part(
    db: Database, h: HealthRule, report: StoredReport, detail: dict[str, Any], problem: str
) -> list[Finding]:
    """A laptop agent's part not working, or working again."""
    recovered = problem.endswith(RECOVERED) or detail.get("recovered") is True
    kind = problem.removesuffix(RECOVERED) or problem
    key = f"problem:{kind}"
    if recovered:
        _resolve(db, report, key, f"the device says {kind} recovered")
        return []
    severity = {
        "filter_failed": h.filter_failed_severity,
        "sniffer_unavailable": h.sniffer_unavailable_severity,
        "netlink_unavailable": h.netlink_unavailable_severity,
    }.get(kind, h.other_problem_severity)
    if severity == 0:
        return []
    label = device_label(report.site, report.device, report.device_class)
    effect = _EFFECTS.get(kind, f"part of it is not working ({kind.replace('_', ' ')})")
    error = detail.get("error")
    why = f" ({str(error)[:MAX_SHOWN]})" if isinstance(error, str) and error.strip() else ""
    summary = f"On {label}, {effect}{why}."
    return [
        report_finding(
            report, rule=RULE, severity=severity, group=report.group, key=key, summary=summary
        )
    ]


def _spool_dropped(rules: RulesConfig, report: StoredReport) -> list[Finding]:
    severity = rules.health.spool_dropped_severity
    if severity == 0:
        return []
    detail = _detail(report.payload)
    count, oldest, newest = (detail.get(k) for k in ("count", "oldest_at", "newest_at"))
    dropped = (
        f"{plural(count, 'routine report', 'routine reports')} (its oldest summaries and heartbeats)"
        if type(count) is int
        else "its oldest routine reports (summaries and heartbeats)"
    )
    span = ""
    if type(oldest) is int and type(newest) is int and 0 < oldest <= newest:
        zone = rules.zone
        span = f" covering {when(oldest, zone)} to {when(newest, zone)} (school time)"
    label = device_label(report.site, report.device, report.device_class)
    summary = (
        f"{label}'s report spool was full (offline too long), so it dropped {dropped}{span}: "
        "that time's activity will never reach the hub."
    )
    return [
        report_finding(
            report,
            rule=RULE,
            severity=severity,
            group=report.group,
            key=SPOOL_DROPPED,
            summary=summary,
        )
    ]


def _resolve(db: Database, report: StoredReport, key: str, why: str) -> None:
    found = find_active(db, report.site, report.device, RULE, key)
    if found is not None:
        resolve(db, found.id, report.received_ms, why)
