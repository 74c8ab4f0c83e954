"""policy publish and policy show: signed, versioned policies for sites and devices."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import time
from pathlib import Path

from hub.broker_session import hub_session, require_acked
from hub.config import load_config
from hub.keys import HubKeys
from hub.policy.publish import Decision, publish_all, site_policy
from hub.store import Database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add policy to the hedgerow-hub parser."""
    policy = sub.add_parser("policy", help="sign and publish policies")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    p = psub.add_parser("publish", help="sign what changed and publish all policies, retained")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument(
        "--by",
        default=None,
        help="who decided the change, for the dashboard's policy log (default: the login "
        "running this, through sudo too)",
    )
    p.add_argument("--reason", default="", help="why, for the policy log (e.g. the ticket)")
    p.set_defaults(func=cmd_publish)
    p = psub.add_parser("show", help="print the current site policy document (signs if changed)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", default=None)
    p.set_defaults(func=cmd_show)


def cmd_publish(args: argparse.Namespace) -> int:
    """hedgerow-hub policy publish: one short-lived broker connection."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    with hub_session(config, "policy") as connection:
        db = Database(config.database_url)
        try:
            decision = Decision(args.by or _login(), args.reason.strip())
            count = publish_all(db, keys, config, connection.publish, decision=decision)
        finally:
            db.close()
        require_acked(connection, count, config.mqtt.url)
    print(
        f"published {count} retained messages (hub keys, site and device policies), each acknowledged by the broker"
    )
    return 0


def _login() -> str:
    """Who runs this: the sudo caller if any, else the login name."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_show(args: argparse.Namespace) -> int:
    """hedgerow-hub policy show."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    db = Database(config.database_url)
    try:
        site = args.site or config.site
        version, _ = site_policy(db, keys, config, site, int(time.time() * 1000))
        rows = db.execute(
            "SELECT body FROM policies WHERE site = ? AND device = '' AND version = ?",
            (site, version),
        )
    finally:
        db.close()
    print(f"# site {site}, version {version}")
    print(json.dumps(json.loads(rows[0][0]), indent=2, sort_keys=True))
    return 0
