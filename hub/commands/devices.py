"""devices and revoke: what is enrolled, resetting a device's replay window, and taking a
device out of service."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hub.broker_session import clear_device_policy
from hub.commands.enroll import report_broker_files
from hub.config import load_config
from hub.enroll.broker import write_broker_files
from hub.store import Database
from hub.store.devices import last_seqs, list_devices, revoke_device
from hub.store.export import device_json
from hub.store.replay_guard import reset_window


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add devices and revoke to the hedgerow-hub parser."""
    p = sub.add_parser(
        "devices",
        help="list enrolled devices (or reset one's replay window: devices reset-seq --help)",
    )
    # --config is checked in cmd_devices, not here: `devices reset-seq --config ...` has its
    # own, and argparse would ask for the list's first.
    p.add_argument("--config", type=Path, help="hub.toml (required)")
    p.add_argument("--site", default=None, help="only this site (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices, devices_parser=p)
    dsub = p.add_subparsers(dest="devices_command", metavar="ACTION")
    r = dsub.add_parser(
        "reset-seq",
        help="reset a device's replay window, so that it may count from seq 1 again",
        description="Reset the replay window of one device: after its spool and sequence file "
        "were wiped it starts again from seq 1, and every report would be refused as a replay. "
        "Its stored reports keep their rows, digests and alerts, but their seqs move below zero "
        "(the seq_resets table records by how much); running hubs pick the reset up with their "
        "next batch and stop throttling the device. Check first that the device really was "
        "wiped: a reset also lets a replay of its old envelopes in once.",
    )
    r.add_argument("--config", required=True, type=Path, help="hub.toml")
    r.add_argument("site", help="the device's site")
    r.add_argument("device", help="the device id")
    r.set_defaults(func=cmd_reset_seq)

    p = sub.add_parser(
        "revoke",
        help="revoke a device: its reports are refused from now on, its broker account "
        "removed (the broker files are rewritten and [enroll] broker_reload run) and its "
        "retained policy taken off the broker",
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
    if args.config is None:
        args.devices_parser.error("the following arguments are required: --config")
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
    """hedgerow-hub revoke: mark the device revoked, rewrite the broker files without its
    account (also when it was revoked already, so a reload that failed can be retried), and
    remove its retained policy from the broker. A failed broker_reload or an unreachable broker
    is reported but the revocation stands: exit status 0."""
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
    problem = clear_device_policy(config, site, args.device)
    if problem is None:
        print(f"its retained policy is removed from the broker ({config.mqtt.url})")
    else:
        print(
            f"warning: its retained policy is still on the broker ({problem}); the next "
            "'hedgerow-hub policy publish' or hub start removes it",
            file=sys.stderr,
        )
    return 0


def cmd_reset_seq(args: argparse.Namespace) -> int:
    """hedgerow-hub devices reset-seq: the device may count from seq 1 again."""
    db = open_database(args.config)
    try:
        done = reset_window(db, args.site, args.device, int(time.time() * 1000))
    finally:
        db.close()
    moved = (
        f"its {done.moved} stored report(s) up to seq {done.highest} now have seq - {done.shift}"
        if done.moved
        else "it had no stored report with a seq above 0"
    )
    print(
        f"{done.site}/{done.device}: replay window reset; {moved}; "
        "its next report may carry any seq from 1"
    )
    return 0
