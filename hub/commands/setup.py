"""init, check and keys: the hub's data directory and keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.wire.suites import SUITE_NAMES, suite_name
from hub.config import load_config
from hub.datadir import init_data_dir
from hub.keys import HubKeys, add_hpke_key


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add init, check and keys to the hedgerow-hub parser."""
    p = sub.add_parser("init", help="create a data directory: keys, database, hub.toml")
    p.add_argument("--data", required=True, type=Path, help="directory to create (must be new)")
    p.add_argument("--site", default="school", help="site id, e.g. cape-primary (default: school)")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL for hub.toml")
    p.add_argument("--database", default=None, help="database URL (default: sqlite in --data)")
    p.add_argument("--suite", choices=sorted(SUITE_NAMES), default="mlkem768-x25519")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("check", help="validate hub.toml and the keys it points at")
    p.add_argument("--config", required=True, type=Path)
    p.set_defaults(func=cmd_check)

    keys = sub.add_parser("keys", help="list or rotate the hub's HPKE keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = ksub.add_parser("list", help="list HPKE keys (newest is current) and the signing key")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
    p = ksub.add_parser("rotate", help="add a new current HPKE key; old keys still decrypt")
    p.add_argument("--config", required=True, type=Path)
    p.set_defaults(func=cmd_keys_rotate)


def cmd_init(args: argparse.Namespace) -> int:
    """hedgerow-hub init."""
    config = init_data_dir(
        args.data,
        args.site,
        mqtt_url=args.mqtt,
        database_url=args.database,
        suite=SUITE_NAMES[args.suite],
    )
    keys = HubKeys(config.parent / "keys")
    print(f"created {config}")
    print(f"hub HPKE key {keys.current.key_id.hex()} ({suite_name(keys.current.suite)})")
    print(f"hub signing key {keys.signing.verify_key.key_id.hex()}")
    print(f"next: hedgerow-hub check --config {config}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """hedgerow-hub check: exit 0 if the configuration and keys load."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    print(f"{config.path}: ok (site {config.site}, {len(keys.all)} HPKE key(s))")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """hedgerow-hub keys list."""
    keys = HubKeys(load_config(args.config).keys_dir)
    rows = [
        {
            "key_id": k.key_id.hex(),
            "suite": suite_name(k.suite),
            "current": k is keys.current,
        }
        for k in keys.all
    ]
    if args.json:
        print(json.dumps({"hpke": rows, "signing": keys.signing.verify_key.key_id.hex()}))
    else:
        for row in rows:
            print(f"hpke {row['key_id']} {row['suite']}{'  (current)' if row['current'] else ''}")
        print(f"signing {keys.signing.verify_key.key_id.hex()}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """hedgerow-hub keys rotate."""
    config = load_config(args.config)
    old = HubKeys(config.keys_dir)
    key = add_hpke_key(config.keys_dir, config.suite)
    print(f"new current HPKE key {key.key_id.hex()}; {len(old.all)} older key(s) still decrypt")
    print(
        "devices seal to it once they receive the next signed policy (hedgerow-hub policy publish)"
    )
    return 0
