"""notify list, notify retry and notify test: the notification outbox from the command line."""

from __future__ import annotations

import argparse
import time
from email.message import EmailMessage
from pathlib import Path

from hub.config import load_config
from hub.errors import HubError
from hub.notify.mail import send_email
from hub.notify.settings import load_notify_settings
from hub.notify.webhook import post_json
from hub.store import Database

STATUSES = ("pending", "failed", "sent", "superseded", "all")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add notify to the hedgerow-hub parser."""
    notify = sub.add_parser("notify", help="the notification outbox: list, retry, test")
    nsub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    p = nsub.add_parser("list", help="list notifications (default: pending and failed)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--status", choices=STATUSES, default=None)
    p.set_defaults(func=cmd_list)
    p = nsub.add_parser("retry", help="send failed notifications again (all, or one --id)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--id", type=int, default=None)
    p.set_defaults(func=cmd_retry)
    p = nsub.add_parser("test", help="send a test message to one contact now")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--contact", required=True)
    p.set_defaults(func=cmd_test)


def cmd_list(args: argparse.Namespace) -> int:
    """hedgerow-hub notify list."""
    config = load_config(args.config)
    wanted = ("pending", "failed") if args.status is None else (args.status,)
    db = Database(config.database_url)
    try:
        sql = (
            "SELECT id, alert_id, channel, contact, status, attempts, last_error FROM notifications"
        )
        if "all" not in wanted:
            sql += f" WHERE status IN ({', '.join('?' for _ in wanted)})"
        rows = db.execute(sql + " ORDER BY id", () if "all" in wanted else wanted)
    finally:
        db.close()
    for nid, alert_id, channel, contact, status, attempts, error in rows:
        line = f"{nid}\talert {alert_id}\t{channel}\t{contact}\t{status}\t{attempts} attempt(s)"
        print(line + (f"\t{error}" if error else ""))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """hedgerow-hub notify retry: failed rows become pending again, due now."""
    config = load_config(args.config)
    now = int(time.time() * 1000)
    db = Database(config.database_url)
    try:
        sql = "UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_ms = ? "
        sql += "WHERE status = 'failed'"
        params: tuple[int, ...] = (now,)
        if args.id is not None:
            sql += " AND id = ?"
            params = (now, args.id)
        rows = db.execute(sql + " RETURNING id", params)
    finally:
        db.close()
    print(f"{len(rows)} notification(s) will be sent again by hedgerow-hub serve")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """hedgerow-hub notify test: check SMTP or the webhook without waiting for an alert."""
    settings = load_notify_settings(load_config(args.config))
    contact = settings.contact(args.contact)
    if contact is None:
        raise HubError(f"no contact {args.contact!r} in hub.toml")
    if contact.email is not None and settings.smtp is not None:
        message = EmailMessage()
        message["From"] = settings.sender
        message["To"] = contact.email
        message["Subject"] = "Hedgerow test message"
        message.set_content("This is a test from hedgerow-hub notify test. No action needed.")
        send_email(settings.smtp, message)
        print(f"test email sent to {contact.email}")
    if contact.webhook is not None:
        post_json(contact.webhook, {"event": "test", "summary": "Hedgerow test message"})
        print(f"test webhook delivered to contact {contact.id}")
    return 0
