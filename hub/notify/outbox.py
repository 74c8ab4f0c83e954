"""The notification outbox: rows written in the same transaction as the alert they follow.

Channels: "email" (sent at once, severity >= immediate_severity), "digest" (one email a day
per contact) and "webhook" (sent at once). The sender reads the alert's current state when it
sends, so one pending row per (alert, contact, channel) is enough.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hub.config import HubConfig
from hub.model import Alert
from hub.notify.settings import NotifySettings, load_notify_settings
from hub.store import Database

log = logging.getLogger(__name__)


def wall_ms() -> int:
    """The wall clock in milliseconds (tests inject their own)."""
    return int(time.time() * 1000)


def next_digest_ms(now_ms: int, hour_utc: int) -> int:
    """The next digest time strictly after `now_ms`."""
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    slot = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    if slot <= now:
        slot += timedelta(days=1)
    return int(slot.timestamp() * 1000)


class NotificationOutbox:
    """An AlertListener (hub.alerts) that queues notifications for every matching contact."""

    def __init__(self, config: HubConfig, *, clock: Callable[[], int] = wall_ms) -> None:
        self.settings: NotifySettings = load_notify_settings(config)
        self.clock = clock

    def on_alert(self, db: Database, alert: Alert, escalated: bool) -> None:
        """Queue rows for each contact and channel that wants this alert (caller's transaction)."""
        now = self.clock()
        queued = 0
        for contact in self.settings.contacts:
            if not contact.wants(alert.site, alert.severity):
                continue
            if contact.email is not None:
                if alert.severity >= self.settings.immediate_severity:
                    queued += self._queue(db, alert.id, "email", contact.id, now)
                    # the immediate email replaces a digest line still waiting for this alert
                    db.execute(
                        "UPDATE notifications SET status = 'superseded' WHERE alert_id = ? "
                        "AND contact = ? AND channel = 'digest' AND status = 'pending'",
                        (alert.id, contact.id),
                    )
                elif not self._pending(db, alert.id, "email", contact.id):
                    due = next_digest_ms(now, self.settings.digest_hour_utc)
                    queued += self._queue(db, alert.id, "digest", contact.id, now, due)
            if contact.webhook is not None:
                queued += self._queue(db, alert.id, "webhook", contact.id, now)
        if queued:
            db.execute(
                "UPDATE alerts SET notified_severity = ? WHERE id = ? AND notified_severity < ?",
                (alert.severity, alert.id, alert.severity),
            )
            log.info(
                "alert %d (%s): %d notification(s) queued", alert.id,
                "escalated" if escalated else "new", queued,
            )  # fmt: skip

    @staticmethod
    def _pending(db: Database, alert_id: int, channel: str, contact: str) -> bool:
        return bool(
            db.execute(
                "SELECT 1 FROM notifications WHERE alert_id = ? AND channel = ? AND contact = ? "
                "AND status = 'pending'",
                (alert_id, channel, contact),
            )
        )

    def _queue(
        self,
        db: Database,
        alert_id: int,
        channel: str,
        contact: str,
        now: int,
        due: int | None = None,
    ) -> int:
        if self._pending(db, alert_id, channel, contact):
            return 0  # the pending row will carry the alert's latest state
        db.execute(
            "INSERT INTO notifications (alert_id, channel, contact, status, attempts, "
            "next_attempt_ms, created_ms) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
            (alert_id, channel, contact, now if due is None else due, now),
        )
        return 1
