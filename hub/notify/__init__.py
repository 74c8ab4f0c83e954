"""Notifications: an outbox of rows written with each alert, sent by email (immediately or in a
daily digest) and webhook, retried with backoff and never dropped silently
(docs/notifications.md)."""
