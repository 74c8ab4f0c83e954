"""init, check and keys: the hub's data directory and keys."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common.tomlconfig import Section, every_problem, load_toml
from common.wire.header import valid_name
from common.wire.suites import SUITE_NAMES, suite_name
from hub.config import HubConfig, load_config, parse_config
from hub.datadir import init_data_dir
from hub.enroll.settings import load_enroll_settings
from hub.ingest.settings import load_ingest_settings
from hub.keys import HubKeys, add_hpke_key
from hub.metrics import metrics_listen
from hub.notify.settings import NotifySettings, load_notify_settings
from hub.policy.settings import PolicySettings, parse_policy
from hub.rules.settings import coverage_warnings, load_rules
from hub.store.retention import load_retention

T = TypeVar("T")


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
    policy file; print every problem (section, key, value and rule), several in one section
    included, and exit 1 if there is one; warn about categories no rule covers and alerts that
    would reach nobody. Fit for systemd's ExecStartPre=."""
    path = Path(args.config).resolve()
    problems: list[str] = []
    raw = every_problem(lambda: load_toml(path), {}, problems)
    config = None if raw is None else every_problem(lambda: parse_config(raw, path), raw, problems)
    if config is None:  # [hub], [database], [mqtt], [web]: nothing else can be read without
        return _report(path, problems)
    tree = config.extra  # the later sections, as their loaders read them

    def attempt(load: Callable[[], T]) -> T | None:
        return every_problem(load, tree, problems)

    keys = attempt(lambda: HubKeys(config.keys_dir))
    rules = attempt(lambda: load_rules(config))
    notify = attempt(lambda: load_notify_settings(config))  # [notify] and [contacts.*]
    policy = attempt(lambda: parse_policy(config.table("policy"), str(config.path)))
    attempt(lambda: load_retention(config))
    attempt(lambda: metrics_listen(config))
    attempt(lambda: load_ingest_settings(config))
    attempt(lambda: load_enroll_settings(config, find_program=True))  # broker_reload exists
    policies = [] if policy is None else [(f"{config.path}", policy)]
    policy_files = sorted((config.data / "policy").glob("*.toml"))
    for site_file in policy_files:
        if not valid_name(site_file.stem):
            problems.append(f"{site_file}: the file name must be <site>.toml for a valid site id")
            continue
        site_raw = every_problem(functools.partial(load_toml, site_file), {}, problems)
        if site_raw is not None:
            read = functools.partial(_site_policy, site_raw, site_file)
            site_policy = every_problem(read, site_raw, problems)
            if site_policy is not None:
                policies.append((str(site_file), site_policy))
    problems += _missing_files(config, notify)
    warnings = _unheard(notify) if notify is not None else []
    if rules is not None:
        warnings += coverage_warnings(rules, _policy_categories(policies))
    for warning in warnings:
        print(f"hedgerow-hub check: warning: {warning}", file=sys.stderr)
    if problems:
        return _report(config.path, problems)
    print(
        f"{config.path}: ok (site {config.site}, {len(keys.all) if keys else 0} HPKE key(s), "
        f"{len(policy_files)} site policy file(s))"
    )
    return 0


def _report(path: Path, problems: list[str]) -> int:
    """Print every problem and how many there are; exit status 1."""
    for problem in problems:
        print(f"hedgerow-hub check: {problem}", file=sys.stderr)
    print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
    return 1


def _site_policy(raw: dict[str, object], path: Path) -> PolicySettings:
    """A site policy file's [policy] as load_policy_settings reads it, from its parsed TOML."""
    root = Section("", raw, str(path))
    settings = parse_policy(root.table("policy"), str(path))
    root.done()
    return settings


def _policy_categories(policies: list[tuple[str, PolicySettings]]) -> dict[str, str]:
    """Each category a policy's groups block -> where it is named (the first place)."""
    named: dict[str, str] = {}
    for source, settings in policies:
        for group in settings.groups:
            for category in group.block:
                named.setdefault(category, f"[policy.groups.{group.name}] block in {source}")
    return named


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
            problems.append(f'{config.path}: {where} = "{path}": cannot be read ({exc.strerror})')
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
