"""The notification outbox: rows written in the same transaction as the alert they follow.

Channels: "email" (sent at once, severity >= immediate_severity), "digest" (one email a day
per contact) and "webhook" (sent at once). Alerts at or above [escalation] min_severity go to
the escalation chain's contacts one at a time (hub.notify.escalation). The sender reads the
alert's current state when it sends, so one pending row per (alert, contact, channel) is
enough.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hub.config import HubConfig
from hub.model import Alert
from hub.notify import escalation
from hub.notify.queue import email_now, pending, queue
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
        """Queue rows for each contact and channel that wants this alert (caller's transaction).
        An alert the escalation chain follows goes to the chain's first contact instead of to
        every contact in a chain (hub.notify.escalation)."""
        now = self.clock()
        settings = self.settings  # one read: a reload swaps the reference
        chained = escalation.follows(settings, alert)
        in_chain = settings.escalation.members if chained and settings.escalation else frozenset()
        queued = 0
        for contact in settings.contacts:
            if contact.id in in_chain or not contact.wants(alert.site, alert.severity):
                continue
            if contact.email is not None:
                if alert.severity >= settings.immediate_severity:
                    queued += email_now(db, alert.id, contact.id, now)
                elif not pending(db, alert.id, "email", contact.id):
                    due = next_digest_ms(now, settings.digest_hour_utc)
                    queued += queue(db, alert.id, "digest", contact.id, now, due)
            if contact.webhook is not None:
                queued += queue(db, alert.id, "webhook", contact.id, now)
        if chained:
            queued += escalation.start(db, settings, alert, now)
        if queued:
            db.execute(
                "UPDATE alerts SET notified_severity = ? WHERE id = ? AND notified_severity < ?",
                (alert.severity, alert.id, alert.severity),
            )
            log.info(
                "alert %d (%s): %d notification(s) queued", alert.id,
                "escalated" if escalated else "new", queued,
            )  # fmt: skip
