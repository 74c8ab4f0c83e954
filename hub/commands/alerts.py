"""alerts and ack: list alerts, and acknowledge or close one (an append-only alert_actions row)."""

from __future__ import annotations

import argparse
import getpass
import json
import time
from datetime import datetime
from pathlib import Path

from common.text import printable
from hub import alerts
from hub.config import load_config
from hub.errors import HubError
from hub.rules import load_rules
from hub.rules.wording import when
from hub.store import Database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add alerts and ack to the hedgerow-hub parser."""
    p = sub.add_parser("alerts", help="list alerts, most severe first")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--status", choices=alerts.STATUS_FILTERS, default="open")
    p.add_argument(
        "--since", help="only alerts seen since this ISO 8601 time (school-local without offset)"
    )
    p.add_argument("--json", action="store_true", help="a JSON array of alerts (docs/alerts.md)")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("ack", help="acknowledge an alert, or close it with --close")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("alert_id", metavar="ALERT_ID", type=int)
    p.add_argument("--note", help="what was done or decided")
    p.add_argument("--by", help="who is acting (default: the login name)")
    p.add_argument("--close", action="store_true", help="close the alert (needs --note)")
    p.set_defaults(func=cmd_ack)


def _since_ms(text: str, config_path: Path) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise HubError(f"--since {text!r}: not an ISO 8601 time such as 2025-03-04T09:00") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=load_rules(load_config(config_path)).zone)
    return int(moment.timestamp() * 1000)


def cmd_alerts(args: argparse.Namespace) -> int:
    """hedgerow-hub alerts."""
    config = load_config(args.config)
    zone = load_rules(config).zone
    since = None if args.since is None else _since_ms(args.since, args.config)
    db = Database(config.database_url)
    try:
        found = alerts.list_alerts(db, args.status, since)
    finally:
        db.close()
    if args.json:
        print(json.dumps([alert.to_json() for alert in found], indent=2))
        return 0
    for alert in found:
        print(
            printable(
                f"#{alert.id}  severity {alert.severity}  {alert.status}  "
                f"last {when(alert.last_seen_ms, zone)}  x{alert.count}  "
                f"{alert.site}/{alert.device}  {alert.rule}"
            )
        )
        print(f"    {printable(alert.summary)}")
    if not found:
        print("no alerts" if args.status == "all" else f"no {args.status} alerts")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    """hedgerow-hub ack."""
    if args.close and not args.note:
        raise HubError("--close needs --note saying what the outcome was")
    config = load_config(args.config)
    actor = args.by or getpass.getuser()
    now_ms = int(time.time() * 1000)
    db = Database(config.database_url)
    try:
        with db.transaction():
            if args.close:
                alert = alerts.close(db, args.alert_id, now_ms, actor, args.note)
            else:
                alert = alerts.acknowledge(db, args.alert_id, now_ms, actor, args.note)
    finally:
        db.close()
    print(printable(f"alert {alert.id} {alert.status} by {actor}: {alert.summary}"))
    return 0
