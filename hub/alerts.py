"""The alert store: create, deduplicate, escalate, acknowledge, close, resolve and list alerts
(a person's other actions, with the outcomes, are in hub/alert_triage.py).

Rules hand it a Finding; it keeps one open alert per (site, device, rule, key) (the alerts_open
partial unique index), honours a cooldown after an alert was acknowledged or closed, and tells
the listener about every new or escalated alert inside the caller's transaction. Every change
of status is an append-only alert_actions row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from hub.errors import HubError, StoreError
from hub.model import Alert, StoredReport
from hub.store import Database, Row
from hub.store.devices import devices_where

log = logging.getLogger(__name__)

HUB_ACTOR = "hedgerow-hub"
STATUS_FILTERS = ("open", "acknowledged", "closed", "all")
# Actions that settle an alert. The cooldown follows a person's acknowledgement or closing,
# not the hub's own "resolved": a device that falls silent again must alert again.
_SETTLING_ACTIONS = ("acknowledged", "closed", "resolved")
ALERT_COLUMNS = (  # the columns alert_of() reads, in its order
    "id, rule, severity, site, device, device_class, grp, status, first_seen_ms, last_seen_ms, "
    "count, summary, evidence, dedup_key"
)


class AlertListener(Protocol):
    """Told about every new or escalated alert, inside the transaction that wrote it, so that
    follow-up rows (notification outbox) commit atomically with the alert."""

    def on_alert(self, db: Database, alert: Alert, escalated: bool) -> None:
        """Record whatever must follow from this alert (e.g. queue notifications)."""


class AlertError(HubError):
    """An alert cannot be found or cannot make the change asked for."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule concluded from one report, rejection or tick: the input of record()."""

    rule: str
    severity: int  # 1..5
    site: str
    device: str
    device_class: str | None
    group: str | None
    key: str  # distinguishes alerts of one rule on one device, e.g. the category
    summary: str  # a sentence a person can read, without pupil names
    at_ms: int  # the hub's clock
    evidence: tuple[int, ...] = ()  # report ids
    count: int = 1  # what it adds to an open alert's count: the attempts it newly reports, or 1
    opens_with: int | None = None  # a new alert's count, if not `count`: the attempts in window


def report_finding(
    report: StoredReport,
    *,
    rule: str,
    severity: int,
    group: str | None,
    key: str,
    summary: str,
    evidence: tuple[int, ...] | None = None,
    count: int = 1,
    opens_with: int | None = None,
) -> Finding:
    """A finding about what one stored report says: its site, device, class, and the hub's
    clock when it arrived; evidence the report itself unless given. `group` is the device's,
    or the client's behind a DNS filter (hub.rules.wording.group_of)."""
    return Finding(
        rule=rule,
        severity=severity,
        site=report.site,
        device=report.device,
        device_class=report.device_class,
        group=group,
        key=key,
        summary=summary,
        at_ms=report.received_ms,
        evidence=(report.id,) if evidence is None else evidence,
        count=count,
        opens_with=opens_with,
    )


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How findings become alerts: the cooldown after acknowledgement and the evidence cap."""

    cooldown_ms: int = 60 * 60_000
    evidence_limit: int = 50


def alert_of(row: Row) -> Alert:
    """An Alert from a row of ALERT_COLUMNS."""
    return Alert(
        id=int(row[0]),
        rule=row[1],
        severity=int(row[2]),
        site=row[3],
        device=row[4],
        device_class=row[5],
        group=row[6],
        status=row[7],
        first_seen_ms=int(row[8]),
        last_seen_ms=int(row[9]),
        count=int(row[10]),
        summary=row[11],
        evidence=tuple(int(i) for i in json.loads(row[12])),
        dedup_key=row[13],
    )


def _merge_evidence(old: tuple[int, ...], new: tuple[int, ...], limit: int) -> tuple[int, ...]:
    merged, seen = list(old), set(old)
    for i in new:
        if i not in seen:
            seen.add(i)
            merged.append(i)
    # Keep the first report (how it started) and the most recent ones.
    if len(merged) > limit:
        merged = merged[:1] + merged[len(merged) - limit + 1 :] if limit > 1 else merged[:limit]
    return tuple(merged)


def add_action(
    db: Database,
    alert_id: int,
    at_ms: int,
    actor: str,
    action: str,
    note: str | None,
    value: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO alert_actions (alert_id, at_ms, actor, action, note, value) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (alert_id, at_ms, actor, action, note, value),
    )


def find_open(db: Database, site: str, device: str, rule: str, key: str) -> Alert | None:
    """The open alert for this (site, device, rule, key), if there is one."""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND device = ? AND rule = ? "
        "AND dedup_key = ? AND status = 'open'",
        (site, device, rule, key),
    )
    return alert_of(rows[0]) if rows else None


def find_active(db: Database, site: str, device: str, rule: str, key: str) -> Alert | None:
    """The open or acknowledged alert for this key: a condition someone knows about or will."""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND device = ? AND rule = ? "
        "AND dedup_key = ? AND status IN ('open', 'acknowledged') ORDER BY id DESC LIMIT 1",
        (site, device, rule, key),
    )
    return alert_of(rows[0]) if rows else None


def _settled_within(db: Database, finding: Finding, cooldown_ms: int) -> Alert | None:
    """The latest acknowledged or closed alert of this key settled less than cooldown ago."""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE site = ? AND device = ? AND rule = ? "
        "AND dedup_key = ? AND status <> 'open' ORDER BY id DESC LIMIT 1",
        (finding.site, finding.device, finding.rule, finding.key),
    )
    if not rows:
        return None
    alert = alert_of(rows[0])
    settled = db.execute(
        "SELECT action, at_ms FROM alert_actions WHERE alert_id = ? AND action IN (?, ?, ?) "
        "ORDER BY id DESC LIMIT 1",
        (alert.id, *_SETTLING_ACTIONS),
    )
    if not settled or settled[0][0] == "resolved":
        return None
    if finding.at_ms - int(settled[0][1]) >= cooldown_ms:
        return None
    return alert


def _update(db: Database, alert: Alert) -> None:
    update_alerts(db, [alert])


def update_alerts(db: Database, alerts: Sequence[Alert]) -> None:
    """Write the severity, last seen, count, summary and evidence of alerts, in one statement."""
    if alerts:
        db.executemany(
            "UPDATE alerts SET severity = ?, last_seen_ms = ?, count = ?, summary = ?, "
            "evidence = ? WHERE id = ?",
            [
                (a.severity, a.last_seen_ms, a.count, a.summary, json.dumps(list(a.evidence)), a.id)
                for a in alerts
            ],
        )


def open_alerts_of(
    db: Database, devices: Iterable[tuple[str, str]]
) -> dict[tuple[str, str, str, str], Alert]:
    """The open alerts of these (site, device)s by (site, device, rule, key): one statement per
    400 devices (ingest reads a batch's at once)."""
    found: dict[tuple[str, str, str, str], Alert] = {}
    for where, params in devices_where(devices):
        for row in db.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'open' AND {where}", params
        ):
            alert = alert_of(row)
            found[(alert.site, alert.device, alert.rule, alert.dedup_key)] = alert
    return found


def _folded(alert: Alert, finding: Finding, limit: int, **changes: Any) -> Alert:
    return replace(
        alert,
        last_seen_ms=max(alert.last_seen_ms, finding.at_ms),
        count=alert.count + finding.count,
        evidence=_merge_evidence(alert.evidence, finding.evidence, limit),
        **changes,
    )


def _opening_count(finding: Finding) -> int:
    return finding.count if finding.opens_with is None else finding.opens_with


def record(
    db: Database, finding: Finding, policy: AlertPolicy, listener: AlertListener | None = None
) -> Alert:
    """Turn a finding into an alert: bump the open one, escalate it, or open a new one.

    Runs inside the caller's transaction and never commits. Within the cooldown after an
    alert of the same key was acknowledged or closed, the finding is folded into that alert
    (count, evidence) without reopening it, unless its severity is higher.
    """
    if not 1 <= finding.severity <= 5:
        raise AlertError(f"finding of {finding.rule}: severity {finding.severity} is not 1..5")
    current = find_open(db, finding.site, finding.device, finding.rule, finding.key)
    if current is not None:
        bumped = bump(db, current, finding, policy, listener)
        if bumped.severity == current.severity:  # else bump() wrote the escalation
            _update(db, bumped)
        return bumped
    return record_new(db, finding, policy, listener)


def record_many(
    db: Database,
    findings: Sequence[Finding],
    policy: AlertPolicy,
    listener: AlertListener | None = None,
    on_failure: Callable[[Finding, Exception], None] | None = None,
) -> None:
    """record() each finding, in order, with one read of the devices' open alerts and one
    write of those bumped (escalations and new alerts are written as they happen, so the
    listener sees them in the table). A finding that fails for any reason but the database
    is passed to on_failure and skipped; StoreError is raised."""
    if not findings:
        return
    open_now = open_alerts_of(db, {(f.site, f.device) for f in findings})
    bumped: dict[int, Alert] = {}  # alert id -> latest state, written at the end
    for finding in findings:
        key = (finding.site, finding.device, finding.rule, finding.key)
        try:
            if not 1 <= finding.severity <= 5:
                raise AlertError(
                    f"finding of {finding.rule}: severity {finding.severity} is not 1..5"
                )
            current = open_now.get(key)
            if current is None:
                alert = record_new(db, finding, policy, listener)
                if alert.status == "open":
                    open_now[key] = alert
                continue
            alert = bump(db, current, finding, policy, listener)
            open_now[key] = alert
            if alert.severity == current.severity:
                bumped[alert.id] = alert
            else:
                bumped.pop(alert.id, None)  # bump() wrote it
        except StoreError:
            raise
        except Exception as exc:
            if on_failure is None:
                raise
            on_failure(finding, exc)
    update_alerts(db, list(bumped.values()))


def bump(
    db: Database,
    current: Alert,
    finding: Finding,
    policy: AlertPolicy,
    listener: AlertListener | None = None,
) -> Alert:
    """Fold a finding into its open alert and return it for the caller to write (update_alerts).
    An escalation is written at once, with its action, before the listener hears of it."""
    # The summary follows the most severe finding: a milder one must not hide it.
    summary = finding.summary if finding.severity >= current.severity else current.summary
    severity = max(finding.severity, current.severity)
    bumped = _folded(current, finding, policy.evidence_limit, summary=summary, severity=severity)
    if finding.severity > current.severity:
        add_action(
            db,
            current.id,
            finding.at_ms,
            HUB_ACTOR,
            "escalated",
            f"severity {current.severity} to {finding.severity}",
        )
        _update(db, bumped)
        log.info("alert %d (%s) escalated to severity %d", bumped.id, bumped.rule, bumped.severity)
        if listener is not None:
            listener.on_alert(db, bumped, True)
    return bumped


def record_new(
    db: Database, finding: Finding, policy: AlertPolicy, listener: AlertListener | None = None
) -> Alert:
    """record() for a finding with no open alert: fold it into one settled within the
    cooldown, or open a new alert."""
    if not 1 <= finding.severity <= 5:
        raise AlertError(f"finding of {finding.rule}: severity {finding.severity} is not 1..5")
    settled = _settled_within(db, finding, policy.cooldown_ms)
    if settled is not None and finding.severity <= settled.severity:
        folded = _folded(settled, finding, policy.evidence_limit)
        _update(db, folded)
        log.debug("alert %d (%s) in cooldown: finding folded in", folded.id, folded.rule)
        return folded
    if settled is not None and settled.status == "closed":
        # A closed alert that escalates reopens: the person who closed it decided on less.
        return _reopen_escalated(db, settled, finding, policy, listener)

    evidence = _merge_evidence((), finding.evidence, policy.evidence_limit)
    alert_id = db.insert(
        "INSERT INTO alerts (rule, dedup_key, severity, site, device, device_class, grp, status, "
        "first_seen_ms, last_seen_ms, count, summary, evidence) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
        (
            finding.rule,
            finding.key,
            finding.severity,
            finding.site,
            finding.device,
            finding.device_class,
            finding.group,
            finding.at_ms,
            finding.at_ms,
            _opening_count(finding),
            finding.summary,
            json.dumps(list(evidence)),
        ),
    )
    add_action(db, alert_id, finding.at_ms, HUB_ACTOR, "opened", None)
    alert = Alert(
        id=alert_id,
        rule=finding.rule,
        severity=finding.severity,
        site=finding.site,
        device=finding.device,
        device_class=finding.device_class,
        group=finding.group,
        status="open",
        first_seen_ms=finding.at_ms,
        last_seen_ms=finding.at_ms,
        count=_opening_count(finding),
        summary=finding.summary,
        evidence=evidence,
        dedup_key=finding.key,
    )
    log.info(
        "alert %d opened: %s severity %d on %s/%s",
        alert_id,
        finding.rule,
        finding.severity,
        finding.site,
        finding.device,
    )
    if listener is not None:
        listener.on_alert(db, alert, False)
    return alert


def get_alert(db: Database, alert_id: int) -> Alert:
    """One alert by id; AlertError if there is none."""
    rows = db.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))
    if not rows:
        raise AlertError(f"there is no alert {alert_id}")
    return alert_of(rows[0])


def _set_status(
    db: Database, alert_id: int, status: str, action: str, at_ms: int, actor: str, note: str | None
) -> Alert:
    alert = get_alert(db, alert_id)
    if alert.status == "closed":
        raise AlertError(f"alert {alert_id} is already closed")
    if alert.status == status:
        raise AlertError(f"alert {alert_id} is already {status}")
    db.execute("UPDATE alerts SET status = ? WHERE id = ?", (status, alert_id))
    add_action(db, alert_id, at_ms, actor, action, note)
    log.info("alert %d %s by %s", alert_id, action, actor)
    return replace(alert, status=status)


def acknowledge(
    db: Database, alert_id: int, at_ms: int, actor: str, note: str | None = None
) -> Alert:
    """Mark an open alert acknowledged (someone is dealing with it) and record who and why."""
    return _set_status(db, alert_id, "acknowledged", "acknowledged", at_ms, actor, note)


def close(db: Database, alert_id: int, at_ms: int, actor: str, note: str | None = None) -> Alert:
    """Close an open or acknowledged alert, recording the outcome note."""
    return _set_status(db, alert_id, "closed", "closed", at_ms, actor, note)


def resolve(db: Database, alert_id: int, at_ms: int, note: str) -> Alert:
    """Close an alert whose condition has ended by itself (e.g. a silent device was heard)."""
    return _set_status(db, alert_id, "closed", "resolved", at_ms, HUB_ACTOR, note)


def list_alerts(
    db: Database, status: str = "open", since_ms: int | None = None, limit: int = 1000
) -> list[Alert]:
    """Alerts, most severe and most recent first; status is open, acknowledged, closed or all."""
    if status not in STATUS_FILTERS:
        raise AlertError(f"status {status!r}: must be one of {', '.join(STATUS_FILTERS)}")
    where: list[str] = []
    params: list[object] = []
    if status != "all":
        where.append("status = ?")
        params.append(status)
    if since_ms is not None:
        where.append("last_seen_ms >= ?")
        params.append(since_ms)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = db.execute(
        f"SELECT {ALERT_COLUMNS} FROM alerts{clause} ORDER BY severity DESC, last_seen_ms DESC, id DESC "
        f"LIMIT {int(limit)}",
        params,
    )
    return [alert_of(row) for row in rows]


def actions(db: Database, alert_id: int) -> list[tuple[int, str, str, str | None]]:
    """The alert's history: (at_ms, actor, action, note), oldest first."""
    rows = db.execute(
        "SELECT at_ms, actor, action, note FROM alert_actions WHERE alert_id = ? ORDER BY id",
        (alert_id,),
    )
    return [(int(r[0]), r[1], r[2], r[3]) for r in rows]


def _reopen_escalated(
    db: Database,
    closed: Alert,
    finding: Finding,
    policy: AlertPolicy,
    listener: AlertListener | None,
) -> Alert:
    reopened = _folded(
        closed, finding, policy.evidence_limit, severity=finding.severity, summary=finding.summary
    )
    reopened = replace(reopened, status="open")
    db.execute("UPDATE alerts SET status = 'open', outcome = NULL WHERE id = ?", (closed.id,))
    _update(db, reopened)
    add_action(
        db,
        closed.id,
        finding.at_ms,
        HUB_ACTOR,
        "reopened",
        f"severity {closed.severity} to {finding.severity} after it was closed",
    )
    log.info("closed alert %d (%s) escalated: reopened", closed.id, closed.rule)
    if listener is not None:
        listener.on_alert(db, reopened, True)
    return reopened


def record_hub_action(db: Database, alert_id: int, at_ms: int, action: str, note: str) -> None:
    """Append a trail row by the hub itself (e.g. the escalation chain telling the next
    contact), in the caller's transaction."""
    add_action(db, alert_id, at_ms, HUB_ACTOR, action, note)
