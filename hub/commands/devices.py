"""devices and revoke: what is enrolled, and taking a device out of service."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hub.commands.enroll import report_broker_files
from hub.config import load_config
from hub.enroll.broker import write_broker_files
from hub.store import Database
from hub.store.devices import last_seqs, list_devices, revoke_device
from hub.store.export import device_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add devices and revoke to the hedgerow-hub parser."""
    p = sub.add_parser("devices", help="list enrolled devices")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", default=None, help="only this site (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser(
        "revoke",
        help="revoke a device: its reports are refused from now on and its broker account "
        "removed (the broker files are rewritten and [enroll] broker_reload run)",
    )
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("device")
    p.add_argument("--site", default=None, help="the device's site (default: [hub] site)")
    p.set_defaults(func=cmd_revoke)


def open_database(config_path: Path) -> Database:
    """The configured database, migrated to this version's schema."""
    db = Database(load_config(config_path).database_url)
    try:
        db.migrate()
    except BaseException:
        db.close()
        raise
    return db


def cmd_devices(args: argparse.Namespace) -> int:
    """hedgerow-hub devices."""
    db = open_database(args.config)
    try:
        devices = list_devices(db, args.site)
        seqs = last_seqs(db, args.site)
    finally:
        db.close()
    rows = [{**device_json(d), "last_seq": seqs.get((d.site, d.device), 0)} for d in devices]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "revoked" if r["revoked_ms"] is not None else "active"
        print(
            f"{r['site']}/{r['device']}  {r['class']}  group={r['group'] or '-'}  {state}  "
            f"last_seq={r['last_seq']}"
        )
    if not rows:
        print("no devices enrolled")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """hedgerow-hub revoke: mark the device revoked, then rewrite the broker files without
    its account (also when it was revoked already, so a reload that failed can be retried).
    A failed broker_reload is reported but the revocation stands: exit status 0."""
    config = load_config(args.config)
    site = args.site or config.site
    db = open_database(args.config)
    try:
        changed = revoke_device(db, site, args.device, int(time.time() * 1000))
        print(f"{site}/{args.device} {'revoked' if changed else 'was already revoked'}")
        files = write_broker_files(db, config)
    finally:
        db.close()
    report_broker_files(files, removed=args.device)
    return 0
