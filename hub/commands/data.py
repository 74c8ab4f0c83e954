"""export and purge: subject access requests and retention."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hub.commands.devices import open_database
from hub.config import load_config
from hub.store.export import export_device, export_user
from hub.store.retention import load_retention, purge


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add export and purge to the hedgerow-hub parser."""
    p = sub.add_parser("export", help="everything held about one device or user, as JSON")
    p.add_argument("--config", required=True, type=Path)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", help="device id")
    who.add_argument("--user", help="user name as reported by devices (client.user)")
    p.add_argument("--site", default=None, help="the device's site (default: [hub] site)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("purge", help="delete what is older than the [retention] periods")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge)


def cmd_export(args: argparse.Namespace) -> int:
    """hedgerow-hub export."""
    config = load_config(args.config)
    db = open_database(args.config)
    try:
        if args.user is not None:
            document = export_user(db, args.user)
        else:
            document = export_device(db, args.site or config.site, args.device)
    finally:
        db.close()
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    """hedgerow-hub purge."""
    retention = load_retention(load_config(args.config))
    db = open_database(args.config)
    try:
        counts = purge(db, retention, int(time.time() * 1000), dry_run=args.dry_run)
    finally:
        db.close()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **counts.to_json()}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb}: {counts.reports} reports ({counts.blocked} blocked rows), "
        f"{counts.rejections} rejections older than {retention.summaries_days} days; "
        f"{counts.alerts} alerts ({counts.alert_actions} actions, {counts.notifications} "
        f"notifications) older than {retention.alerts_days} days"
    )
    return 0
