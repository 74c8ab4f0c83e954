"""policy publish and policy show: signed, versioned policies for sites and devices."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hub.config import load_config
from hub.errors import HubError
from hub.keys import HubKeys
from hub.mqtt import MqttConnection
from hub.policy.publish import publish_all, site_policy
from hub.store import Database

CONNECT_TIMEOUT_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add policy to the hedgerow-hub parser."""
    policy = sub.add_parser("policy", help="sign and publish policies")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    p = psub.add_parser("publish", help="sign what changed and publish all policies, retained")
    p.add_argument("--config", required=True, type=Path)
    p.set_defaults(func=cmd_publish)
    p = psub.add_parser("show", help="print the current site policy document (signs if changed)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", default=None)
    p.set_defaults(func=cmd_show)


def cmd_publish(args: argparse.Namespace) -> int:
    """hedgerow-hub policy publish: one short-lived broker connection."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    connection = MqttConnection(config.mqtt, client_id=f"{config.mqtt.client_id}-policy")
    connection.start()
    try:
        if not connection.wait_ready(CONNECT_TIMEOUT_S):
            raise HubError(f"cannot reach the broker at {config.mqtt.url}")
        db = Database(config.database_url)
        try:
            count = publish_all(db, keys, config, connection.publish)
        finally:
            db.close()
    finally:
        connection.stop()  # queued QoS 1 messages go out before the DISCONNECT
    print(f"published {count} retained messages (hub keys, site and device policies)")
    return 0


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
