"""enroll-token create/list/revoke, enroll bundle and enroll broker-files: bringing devices in."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from common.identity import DEVICE_CLASSES
from hub.config import HubConfig, load_config
from hub.enroll.broker import BrokerFiles, write_broker_files
from hub.enroll.bundle import make_bundle
from hub.enroll.settings import enrol_command, load_enroll_settings
from hub.enroll.tokens import create_token, list_tokens, parse_duration, revoke_token
from hub.keys import HubKeys
from hub.policy.settings import load_policy_settings
from hub.store import Database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add enroll-token and enroll to the hedgerow-hub parser."""
    tokens = sub.add_parser("enroll-token", help="tokens technicians type to enrol devices")
    tsub = tokens.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create a token (shown once, stored hashed)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", default=None, help="site id (default: [hub] site)")
    p.add_argument("--class", dest="device_class", required=True, choices=DEVICE_CLASSES)
    p.add_argument("--group", default=None, help="filtering group for the devices, e.g. pupils")
    p.add_argument("--uses", type=int, default=1, help="how many devices may use it (default 1)")
    p.add_argument("--expires", default="7d", help="lifetime, e.g. 30m, 12h, 7d (default 7d)")
    p.set_defaults(func=cmd_token_create)
    p = tsub.add_parser("list", help="every token: id, site, class, group, uses left, state")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--site", default=None, help="only this site's tokens")
    p.set_defaults(func=cmd_token_list)
    p = tsub.add_parser("revoke", help="revoke a token by its id (from enroll-token list)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("token_id", metavar="ID", help="the token's id, e.g. k3xq7m2abcde")
    p.set_defaults(func=cmd_token_revoke)

    enroll = sub.add_parser("enroll", help="offline enrolment and broker accounts")
    esub = enroll.add_subparsers(dest="enroll_command", required=True, metavar="ACTION")
    p = esub.add_parser("bundle", help="register a device and write its offline bundle (0600)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--device", required=True, help="device id, e.g. dns-hall")
    p.add_argument("--site", default=None, help="site id (default: [hub] site)")
    p.add_argument("--class", dest="device_class", required=True, choices=DEVICE_CLASSES)
    p.add_argument("--group", default=None)
    p.add_argument("--broker", default=None, help="broker URL the device uses ([mqtt] url)")
    p.add_argument("--ca", default=None, help="path of the broker CA certificate on the device")
    p.add_argument("--out", required=True, type=Path, help="bundle file to write (must be new)")
    p.set_defaults(func=cmd_bundle)
    p = esub.add_parser(
        "broker-files",
        help="rewrite the Mosquitto password file and ACL, then run [enroll] broker_reload",
    )
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--out", type=Path, default=None, help="directory ([enroll] broker_dir)")
    p.set_defaults(func=cmd_broker_files)


def _now_ms() -> int:
    return int(time.time() * 1000)


def cmd_token_create(args: argparse.Namespace) -> int:
    """hedgerow-hub enroll-token create: the token, then its broker login in the broker files."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    site = args.site or config.site
    lifetime = parse_duration(args.expires)
    groups = [g.name for g in load_policy_settings(config, site).groups]
    now = _now_ms()
    db = Database(config.database_url)
    try:
        with db.transaction():
            token = create_token(
                db,
                keys,
                site=site,
                device_class=args.device_class,
                group=args.group,
                uses=args.uses,
                expires_ms=now + lifetime,
                now_ms=now,
                groups=groups,
            )
            files = write_broker_files(db, config, now_ms=now)
    finally:
        db.close()
    print(token.text)
    group = args.group or "the site's default for the class"
    print(
        f"# id {token.token_id}: site {site}, class {args.device_class}, group {group}, "
        f"{args.uses} use(s), expires in {args.expires}"
    )
    print(f"# on the device: {_enrol_hint(config, site, args.device_class, token.text)}")
    report_broker_files(files)
    return 0


def _enrol_hint(config: HubConfig, site: str, device_class: str, token: str) -> str:
    """enrol_command, plus where to set the hub's address when it is not known."""
    command = enrol_command(config, site, device_class, token)
    if load_enroll_settings(config).device_broker_url is None:
        command += "   (set [enroll] device_broker_url to print the hub's address here)"
    return command


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def cmd_token_list(args: argparse.Namespace) -> int:
    """hedgerow-hub enroll-token list."""
    config = load_config(args.config)
    db = Database(config.database_url)
    try:
        tokens = list_tokens(db, site=args.site)
    finally:
        db.close()
    if not tokens:
        print("no enrolment tokens")
        return 0
    now = _now_ms()
    print(f"{'ID':<13} {'SITE':<16} {'CLASS':<13} {'GROUP':<10} {'LEFT':>5}  {'STATE':<8} EXPIRES")
    for t in tokens:
        print(
            f"{t.token_id or '(no id)':<13} {t.site:<16} {t.device_class:<13} "
            f"{t.group or '(default)':<10} {t.uses_left:>5}  {t.state(now):<8} "
            f"{_date(t.expires_ms)} UTC"
        )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """hedgerow-hub enroll-token revoke ID: the token and its broker login go."""
    config = load_config(args.config)
    now = _now_ms()
    db = Database(config.database_url)
    try:
        with db.transaction():
            token = revoke_token(db, args.token_id, now_ms=now)
            files = write_broker_files(db, config, now_ms=now)
    finally:
        db.close()
    print(f"revoked token {token.token_id} ({token.site}, {token.device_class})")
    return 0 if report_broker_files(files, removed=f"token {token.token_id}") else 1


def cmd_bundle(args: argparse.Namespace) -> int:
    """hedgerow-hub enroll bundle."""
    config = load_config(args.config)
    keys = HubKeys(config.keys_dir)
    db = Database(config.database_url)
    try:
        written = make_bundle(
            db,
            keys,
            config,
            site=args.site or config.site,
            device=args.device,
            device_class=args.device_class,
            group=args.group,
            broker_url=args.broker
            or load_enroll_settings(config).device_broker_url
            or config.mqtt.url,
            out=args.out,
            now_ms=_now_ms(),
            ca=args.ca,
        )
    finally:
        db.close()
    secrets = "it holds the device's private key and MQTT password."
    print(f"wrote {written.path} (mode 0600): {secrets}")
    print("Move it to the device on encrypted media, import it, then delete every copy.")
    report_broker_files(written.broker)
    return 0


def cmd_broker_files(args: argparse.Namespace) -> int:
    """hedgerow-hub enroll broker-files."""
    config = load_config(args.config)
    db = Database(config.database_url)
    try:
        files = write_broker_files(db, config, args.out)
    finally:
        db.close()
    return 0 if report_broker_files(files) else 1


def report_broker_files(files: BrokerFiles, *, removed: str | None = None) -> bool:
    """Print what was rewritten (and whose account was `removed`) and whether Mosquitto was
    reloaded; False if broker_reload failed (its error is logged already)."""
    gone = f"; no account for {removed}" if removed else ""
    print(f"wrote {files.passwd} and {files.acl} ({files.users} accounts{gone})")
    if files.reload is None:
        print(
            "no [enroll] broker_reload: Mosquitto applies them when it reloads (the "
            "hedgerow-broker-reload path unit does that when the files change)"
        )
        return True
    if files.reload.ok:
        print(files.reload.describe())
        return True
    print(
        "broker NOT reloaded (see the error above): Mosquitto keeps its old accounts until it "
        "reloads; fix [enroll] broker_reload and run 'hedgerow-hub enroll broker-files', or "
        "reload Mosquitto by hand"
    )
    return False
