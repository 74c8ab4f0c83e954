"""Retention: how long reports and alerts are kept ([retention] in hub.toml), and the purge.

Reports (summaries, events, heartbeats) go after summaries_days (default 90) with their blocked
and attempts rows, judged by when the hub received them; rejection records (samples and
per-minute counts) and envelopes still held for a key that never came go with them. Alerts and their
actions (and queued notifications) go after alerts_days (default 456, about 15 months), judged
by the alert's last activity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hub.config import HubConfig
from hub.store.database import Database

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Retention:
    """Days to keep each kind of record."""

    summaries_days: int = 90
    alerts_days: int = 456


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """How many rows a purge deleted (or would delete, on a dry run)."""

    reports: int
    blocked: int
    rejections: int
    alerts: int
    alert_actions: int
    notifications: int

    def to_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return asdict(self)


def load_retention(config: HubConfig) -> Retention:
    """Read [retention] strictly (unknown keys and out-of-range values are ConfigErrors)."""
    section = config.section("retention")
    retention = Retention(
        summaries_days=section.integer("summaries_days", 90, lo=1, hi=36_500),
        alerts_days=section.integer("alerts_days", 456, lo=1, hi=36_500),
    )
    section.done()
    return retention


def _count(db: Database, sql: str, cutoff: int) -> int:
    return int(db.execute(f"SELECT COUNT(*) {sql}", (cutoff,))[0][0])


def purge(db: Database, retention: Retention, now_ms: int, *, dry_run: bool = False) -> PurgeCounts:
    """Delete what is older than the retention periods, in one transaction."""
    reports_cutoff = now_ms - retention.summaries_days * DAY_MS
    alerts_cutoff = now_ms - retention.alerts_days * DAY_MS
    old_reports = "FROM reports WHERE received_ms < ?"
    old_blocked = "FROM blocked WHERE report_id IN (SELECT id FROM reports WHERE received_ms < ?)"
    old_attempts = "FROM attempts WHERE report_id IN (SELECT id FROM reports WHERE received_ms < ?)"
    old_wills = "FROM last_wills WHERE received_ms < ?"
    old_rejections = "FROM rejections WHERE at_ms < ?"
    old_counts = "FROM rejection_counts WHERE minute_ms < ?"
    old_held = "FROM held_envelopes WHERE received_ms < ?"
    old_alerts = "FROM alerts WHERE last_seen_ms < ?"
    old_actions = (
        "FROM alert_actions WHERE alert_id IN (SELECT id FROM alerts WHERE last_seen_ms < ?)"
    )
    old_notes = (
        "FROM notifications WHERE alert_id IN (SELECT id FROM alerts WHERE last_seen_ms < ?)"
    )
    # The escalation chain's state of each purged alert (hub/notify/escalation.py): it goes
    # with its alert, uncounted, as the alert's own derived data.
    old_chains = (
        "FROM escalations WHERE alert_id IN (SELECT id FROM alerts WHERE last_seen_ms < ?)"
    )
    with db.transaction():
        counts = PurgeCounts(
            reports=_count(db, old_reports, reports_cutoff),
            blocked=_count(db, old_blocked, reports_cutoff),
            rejections=_count(db, old_rejections, reports_cutoff),
            alerts=_count(db, old_alerts, alerts_cutoff),
            alert_actions=_count(db, old_actions, alerts_cutoff),
            notifications=_count(db, old_notes, alerts_cutoff),
        )
        if not dry_run:
            # Children before parents: the sub-selects still find the parents.
            for sql, cutoff in (
                (old_blocked, reports_cutoff),
                (old_attempts, reports_cutoff),  # derived from reports, so not counted apart
                (old_wills, reports_cutoff),
                (old_reports, reports_cutoff),
                (old_rejections, reports_cutoff),
                (old_counts, reports_cutoff),  # the counts behind the samples
                (old_held, reports_cutoff),
                (old_actions, alerts_cutoff),
                (old_notes, alerts_cutoff),
                (old_chains, alerts_cutoff),
                (old_alerts, alerts_cutoff),
            ):
                db.execute(f"DELETE {sql}", (cutoff,))
    return counts
