"""Outbox rows: one pending row per (alert, contact, channel), shared by the outbox and the
escalation chain."""

from __future__ import annotations

from hub.notify.settings import Contact
from hub.store import Database


def pending(db: Database, alert_id: int, channel: str, contact: str) -> bool:
    """True if a row for this alert, channel and contact waits to be sent."""
    return bool(
        db.execute(
            "SELECT 1 FROM notifications WHERE alert_id = ? AND channel = ? AND contact = ? "
            "AND status = 'pending'",
            (alert_id, channel, contact),
        )
    )


def queue(
    db: Database, alert_id: int, channel: str, contact: str, now: int, due: int | None = None
) -> int:
    """Queue one row (1), or none if one is pending already (0): the sender reads the alert's
    latest state when it sends."""
    if pending(db, alert_id, channel, contact):
        return 0
    db.execute(
        "INSERT INTO notifications (alert_id, channel, contact, status, attempts, "
        "next_attempt_ms, created_ms) VALUES (?, ?, ?, 'pending', 0, ?, ?)",
        (alert_id, channel, contact, now if due is None else due, now),
    )
    return 1


def email_now(db: Database, alert_id: int, contact: str, now: int) -> int:
    """Queue an immediate email, replacing a digest line still waiting for this alert."""
    db.execute(
        "UPDATE notifications SET status = 'superseded' WHERE alert_id = ? "
        "AND contact = ? AND channel = 'digest' AND status = 'pending'",
        (alert_id, contact),
    )
    return queue(db, alert_id, "email", contact, now)


def queue_at_once(db: Database, alert_id: int, contact: Contact, now: int) -> int:
    """Tell a contact at once by every channel it has (email and webhook); rows queued."""
    queued = 0 if contact.email is None else email_now(db, alert_id, contact.id, now)
    if contact.webhook is not None:
        queued += queue(db, alert_id, "webhook", contact.id, now)
    return queued
