"""tamper: an agent that died without a clean stop (its MQTT last will), a filter switched off, a
laptop's resolver changed (a "resolver_changed" event, a heartbeat naming another resolver, or
the agent's "tamper" event: it found its DNS setting changed and restored it), a device clock
more than a few minutes out, or a policy left stale.

Clock skew is judged on heartbeats only: summaries and events may be spooled for days and are
legitimately old, while a heartbeat is sealed just before it is sent. A last will is sealed
when the agent connects, so it is never judged for skew either.

A last will is not an alert at once: a broker restart publishes the will of every connected
agent, and they all reconnect a moment later. The will waits in the last_wills table; a tick
raises the alert only if the device has not been heard since, once the grace period is over.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from common.wire.header import Kind
from hub.alerts import Finding, find_active, report_finding, resolve
from hub.model import StoredReport
from hub.rules.settings import RulesConfig
from hub.rules.wording import device_label, plural
from hub.store import Database

log = logging.getLogger(__name__)

RULE = "tamper"
LAPTOPS = ("pupil-laptop", "staff-laptop")
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
TAMPER_EVENT = "tamper"
MAX_SHOWN = 100  # what a sentence shows of a resolver the device names
_KEY = re.compile(r"[a-z0-9_]{1,40}")  # a "tamper" event's `what` becomes the alert key
_HUB_KEYS = ("last_will", "filter_disabled", "clock_skew", "policy_stale")
_TAMPER_WORDS = {
    "resolver_changed": "the DNS resolver was changed behind the agent's back",
    "filter_unreachable": "the system's DNS stopped reaching the agent's filter",
}


def previous_resolver(db: Database, report: StoredReport) -> str | None:
    """The resolver named by this device's latest earlier heartbeat, if any."""
    rows = db.execute(
        "SELECT body FROM reports WHERE site = ? AND device = ? AND id <> ? AND time_ms <= ? "
        "AND body LIKE ? ORDER BY time_ms DESC, id DESC LIMIT 10",
        (report.site, report.device, report.id, report.time_ms, '%"resolver"%'),
    )
    for (body,) in rows:
        try:
            payload = json.loads(body)
        except ValueError:
            continue
        if isinstance(payload, dict) and "uptime_s" in payload:
            resolver = payload.get("resolver")
            return resolver if isinstance(resolver, str) else None
    return None


def _resolver_event(payload: dict[str, Any]) -> str:
    detail = payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    old, new = detail.get("from"), detail.get("to")
    old = None if old is None else str(old)[:MAX_SHOWN]
    new = None if new is None else str(new)[:MAX_SHOWN]
    if old is not None and new is not None:
        return f" from {old} to {new}"
    return f" to {new}" if new is not None else ""


def _tamper_event(rules: RulesConfig, payload: dict[str, Any], label: str) -> tuple[int, str, str]:
    """A laptop agent found its DNS setting changed behind its back ("tamper" event): the
    key is what changed (`resolver_changed` shares the resolver_changed event's alert)."""
    detail = payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    what = detail.get("what")
    key = what if isinstance(what, str) and _KEY.fullmatch(what) else "tamper"
    if key in _HUB_KEYS:  # the hub's own findings: a device must not open or close those
        key = "tamper"
    said = _TAMPER_WORDS.get(key, f"its DNS setting was tampered with ({key.replace('_', ' ')})")
    if key in ("resolver_changed", "tamper"):
        said += _resolver_event(payload)
    restored = detail.get("restored")
    if restored is True:
        after = "; the agent restored its setting"
    elif restored is False:
        after = "; the agent could not restore its setting"
    else:
        after = ""
    return rules.tamper.resolver_changed_severity, key, f"On {label}, {said}{after}."


def _heartbeat(
    db: Database, rules: RulesConfig, report: StoredReport, label: str
) -> list[tuple[int, str, str]]:
    t = rules.tamper
    p = report.payload
    found = []
    if p.get("clean_stop") is False and t.last_will_severity > 0:
        note_last_will(db, report)
    if p.get("filter_active") is False:
        found.append(
            (t.filter_disabled_severity, "filter_disabled", f"{label} says its filter is off.")
        )
    skew = report.time_ms - report.received_ms
    if p.get("clean_stop") is not False and abs(skew) > t.clock_skew_minutes * MINUTE_MS:
        direction = "ahead of" if skew > 0 else "behind"
        minutes = plural(abs(skew) // MINUTE_MS, "minute", "minutes")
        found.append(
            (
                t.clock_skew_severity,
                "clock_skew",
                f"{label}'s clock is {minutes} {direction} the hub's.",
            )
        )
    resolver = p.get("resolver")
    if report.device_class in LAPTOPS and isinstance(resolver, str):
        before = previous_resolver(db, report)
        if before is not None and before != resolver:
            found.append(
                (
                    t.resolver_changed_severity,
                    "resolver_changed",
                    f"{label}'s DNS resolver changed from {before} to {resolver}.",
                )
            )
    return found


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """Findings from a heartbeat, or from a laptop's "resolver_changed" or "tamper" event."""
    if not rules.tamper.enabled or report.kind == Kind.SUMMARY:
        return []
    label = device_label(report.site, report.device, report.device_class)
    found: list[tuple[int, str, str]] = []
    if report.kind == Kind.HEARTBEAT:
        found = _heartbeat(db, rules, report, label)
    elif report.kind == Kind.EVENT and report.device_class in LAPTOPS:
        event = report.payload.get("type")
        if event == "resolver_changed":
            found.append(
                (
                    rules.tamper.resolver_changed_severity,
                    "resolver_changed",
                    f"{label}'s DNS resolver was changed{_resolver_event(report.payload)}.",
                )
            )
        elif event == TAMPER_EVENT:
            found.append(_tamper_event(rules, report.payload, label))
    return [
        report_finding(
            report, rule=RULE, severity=severity, group=report.group, key=key, summary=summary
        )
        for severity, key, summary in found
        if severity > 0
    ]


def stale_policies(db: Database, rules: RulesConfig, now_ms: int) -> list[Finding]:
    """Devices still reporting a policy older than one published more than N hours ago.

    A policy row for device "" or "*" is the site-wide policy. Open alerts of devices that have
    caught up are resolved here too.
    """
    t = rules.tamper
    if not t.enabled or t.policy_stale_severity == 0:
        return []
    rows = db.execute(
        "SELECT d.site, d.device, d.class, d.grp, d.policy_version, MIN(p.created_ms), "
        "MAX(p.version) FROM devices d JOIN policies p ON p.site = d.site "
        "AND (p.device = d.device OR p.device IN ('', '*')) AND p.version > d.policy_version "
        "WHERE d.revoked_ms IS NULL "
        "GROUP BY d.site, d.device, d.class, d.grp, d.policy_version",
    )
    stale = set()
    findings = []
    for site, device, device_class, group, version, published_ms, latest in rows:
        if now_ms - int(published_ms) <= t.policy_stale_hours * HOUR_MS:
            continue
        stale.add((site, device))
        if find_active(db, site, device, RULE, "policy_stale") is not None:
            continue
        label = device_label(site, device, device_class)
        hours = plural((now_ms - int(published_ms)) // HOUR_MS, "hour", "hours")
        findings.append(
            Finding(
                rule=RULE,
                severity=t.policy_stale_severity,
                site=site,
                device=device,
                device_class=device_class,
                group=group,
                key="policy_stale",
                summary=f"{label} still uses policy version {version}; version {latest} "
                f"was published {hours} ago.",
                at_ms=now_ms,
            )
        )
    for alert_id, site, device in db.execute(
        "SELECT id, site, device FROM alerts WHERE rule = ? AND dedup_key = 'policy_stale' "
        "AND status IN ('open', 'acknowledged')",
        (RULE,),
    ):
        if (site, device) not in stale:
            resolve(db, int(alert_id), now_ms, "the device now reports the current policy")
    return findings


def note_last_will(db: Database, report: StoredReport) -> None:
    """Keep a device's last will (its latest) until last_wills() judges it."""
    db.execute(
        "INSERT INTO last_wills (site, device, report_id, received_ms) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (site, device) DO UPDATE SET report_id = excluded.report_id, "
        "received_ms = excluded.received_ms",
        (report.site, report.device, report.id, report.received_ms),
    )


def last_wills(db: Database, rules: RulesConfig, now_ms: int) -> list[Finding]:
    """Findings for last wills older than the grace period from devices silent since.

    Each will is claimed with a DELETE ... RETURNING, so that of several hub processes ticking
    at once only one judges it. A device that sent anything stored after its will (a later
    report id) reconnected: no alert."""
    t = rules.tamper
    rows = db.execute(
        "SELECT w.site, w.device, w.report_id, w.received_ms, d.class, d.grp, d.revoked_ms FROM last_wills w LEFT JOIN devices d ON d.site = w.site "
        "AND d.device = w.device WHERE w.received_ms <= ?",
        (now_ms - t.last_will_grace_minutes * MINUTE_MS,),
    )
    findings = []
    for site, device, report_id, will_ms, device_class, group, revoked_ms in rows:
        claimed = db.execute(
            "DELETE FROM last_wills WHERE site = ? AND device = ? AND report_id = ? "
            "RETURNING report_id",
            (site, device, report_id),
        )
        if not claimed or device_class is None or revoked_ms is not None:
            continue
        if not t.enabled or t.last_will_severity == 0:
            continue
        heard = db.execute(
            "SELECT 1 FROM reports WHERE site = ? AND device = ? AND id > ? LIMIT 1",
            (site, device, report_id),
        )
        if heard:
            log.info("last will of %s/%s followed by reports: no alert", site, device)
            continue
        label = device_label(site, device, device_class)
        silent_for = plural((now_ms - int(will_ms)) // MINUTE_MS, "minute", "minutes")
        findings.append(
            Finding(
                rule=RULE,
                severity=t.last_will_severity,
                site=site,
                device=device,
                device_class=device_class,
                group=group,
                key="last_will",
                summary=f"{label}'s agent went offline without a clean stop (a crash, a power "
                f"cut, or someone stopping it) and has not been heard from for {silent_for}.",
                at_ms=now_ms,
                evidence=(int(report_id),),
            )
        )
    return findings
