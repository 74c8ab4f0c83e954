"""Alerts about the hub and its broker themselves (not about a device): a broker reload that
failed, the hub's broker session taken over. They are `security` alerts on the hub's own
broker account, recorded with the notification outbox so that the safeguarding team hears.
"""

from __future__ import annotations

import logging

from hub.alerts import AlertPolicy, Finding, record
from hub.config import HubConfig
from hub.notify.outbox import NotificationOutbox
from hub.store import Database

log = logging.getLogger(__name__)

RULE = "security"


def raise_hub_alert(
    db: Database,
    config: HubConfig,
    *,
    device: str,
    key: str,
    summary: str,
    at_ms: int,
    severity: int = 4,
) -> None:
    """Record (or bump) a security alert about the hub's broker account `device`, in the
    caller's transaction, and queue its notifications. Logged, never raised."""
    finding = Finding(
        rule=RULE,
        severity=severity,
        site=config.site,
        device=device,
        device_class=None,
        group=None,
        key=key,
        summary=summary,
        at_ms=at_ms,
    )
    try:
        record(db, finding, AlertPolicy(), NotificationOutbox(config))
    except Exception:
        log.exception("cannot record the %s alert (%s)", key, summary)
