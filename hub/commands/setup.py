"""init, check and keys: the hub's data directory and keys."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from common.errors import HedgerowError
from common.wire.header import valid_name
from common.wire.suites import SUITE_NAMES, suite_name
from hub.config import HubConfig, load_config
from hub.datadir import init_data_dir
from hub.enroll.settings import load_enroll_settings
from hub.ingest.settings import load_ingest_settings
from hub.keys import HubKeys, add_hpke_key
from hub.metrics import metrics_listen
from hub.notify.settings import NotifySettings, load_notify_settings
from hub.policy.settings import load_policy_settings, parse_policy
from hub.rules.settings import load_rules
from hub.store.retention import load_retention


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add init, check and keys to the hedgerow-hub parser."""
    p = sub.add_parser("init", help="create a data directory: keys, database, hub.toml")
    p.add_argument("--data", required=True, type=Path, help="directory to create (must be new)")
    p.add_argument("--site", default="school", help="site id, e.g. cape-primary (default: school)")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883", help="broker URL for hub.toml")
    p.add_argument("--database", default=None, help="database URL (default: sqlite in --data)")
    p.add_argument("--suite", choices=sorted(SUITE_NAMES), default="mlkem768-x25519")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "check", help="validate hub.toml (every section), site policy files and the keys"
    )
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
    """hedgerow-hub check: load every section serve reads, as serve would, and every site
    policy file; print each problem (section, key, value and rule) and exit 1 if there is one.
    Fit for systemd's ExecStartPre=."""
    config = load_config(args.config)  # [hub], [database], [mqtt], [web]: nothing else without
    problems: list[str] = []

    def attempt(load: Callable[[], object]) -> None:
        try:
            load()
        except HedgerowError as exc:
            problems.append(str(exc))

    keys: list[HubKeys] = []
    notify: list[NotifySettings] = []
    attempt(lambda: keys.append(HubKeys(config.keys_dir)))
    attempt(lambda: load_rules(config))
    attempt(lambda: notify.append(load_notify_settings(config)))  # [notify] and [contacts.*]
    attempt(lambda: parse_policy(config.table("policy"), str(config.path)))
    attempt(lambda: load_retention(config))
    attempt(lambda: metrics_listen(config))
    attempt(lambda: load_ingest_settings(config))
    attempt(lambda: load_enroll_settings(config, find_program=True))  # broker_reload exists
    policy_files = sorted((config.data / "policy").glob("*.toml"))
    for path in policy_files:
        if not valid_name(path.stem):
            problems.append(f"{path}: the file name must be <site>.toml for a valid site id")
            continue
        attempt(functools.partial(load_policy_settings, config, path.stem))
    problems += _missing_files(config, notify[0] if notify else None)
    warnings = _unheard(notify[0]) if notify else []
    for warning in warnings:
        print(f"hedgerow-hub check: warning: {warning}", file=sys.stderr)
    if problems:
        for problem in problems:
            print(f"hedgerow-hub check: {problem}", file=sys.stderr)
        print(f"{config.path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"{config.path}: ok (site {config.site}, {len(keys[0].all)} HPKE key(s), "
        f"{len(policy_files)} site policy file(s))"
    )
    return 0


def _missing_files(config: HubConfig, notify: NotifySettings | None) -> list[str]:
    """Every file the configuration names that cannot be read: serve would fail on it later
    (a misspelt password_file used to pass check)."""
    named = [
        ("[mqtt] password_file", config.mqtt.password_file),
        ("[mqtt] ca", config.mqtt.ca),
        ("[mqtt] cert", config.mqtt.cert),
        ("[mqtt] key", config.mqtt.key),
    ]
    if notify is not None and notify.smtp is not None:
        named += [
            ("[notify.smtp] password_file", notify.smtp.password_file),
            ("[notify.smtp] ca_file", notify.smtp.ca_file),
        ]
    problems = []
    for where, path in named:
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            problems.append(f"{config.path}: {where} = \"{path}\": cannot be read ({exc.strerror})")
    return problems


def _unheard(notify: NotifySettings) -> list[str]:
    """A warning when an alert would reach nobody (email without [notify.smtp] is an error
    already)."""
    if not notify.contacts:
        return ["no [contacts.*] are configured: alerts are stored but nobody is told"]
    return []


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
