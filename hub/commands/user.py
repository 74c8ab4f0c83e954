"""user: the dashboard's accounts (add, passwd, disable, list). Passwords are read from the
terminal (asked twice) or from stdin with --password-stdin, never from the command line."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from hub.config import load_config
from hub.errors import HubError
from hub.store import Database
from hub.web.accounts import add_account, disable_account, list_accounts, set_password
from hub.web.context import when
from hub.web.passwords import check_new
from hub.web.permissions import Role


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add user to the hedgerow-hub parser."""
    user = sub.add_parser("user", help="dashboard accounts: add, passwd, disable, list")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    p = usub.add_parser("add", help="create an account")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=[str(r) for r in Role])
    p.add_argument(
        "--group", action="append", default=[], help="a group a dsl_limited account sees (repeat)"
    )
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_add)

    p = usub.add_parser("passwd", help="set a new password (ends the account's sessions)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_passwd)

    p = usub.add_parser("disable", help="disable an account and end its sessions now")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("username")
    p.set_defaults(func=cmd_disable)

    p = usub.add_parser("list", help="list accounts")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def read_password(from_stdin: bool) -> str:
    """A new password: one line of stdin, or asked twice on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise HubError("no terminal to ask for the password: use --password-stdin")
        password = getpass.getpass("New password: ")
        if getpass.getpass("Same password again: ") != password:
            raise HubError("the two passwords differ")
    check_new(password)
    return password


def _db(config_path: Path) -> Database:
    db = Database(load_config(config_path).database_url)
    db.migrate()
    return db


def cmd_add(args: argparse.Namespace) -> int:
    """hedgerow-hub user add."""
    password = read_password(args.password_stdin)
    db = _db(args.config)
    try:
        account = add_account(
            db, args.username.lower(), Role(args.role), password, tuple(args.group)
        )
    finally:
        db.close()
    print(f"added {account.username} ({account.role})")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """hedgerow-hub user passwd."""
    password = read_password(args.password_stdin)
    db = _db(args.config)
    try:
        set_password(db, args.username.lower(), password)
    finally:
        db.close()
    print(f"password of {args.username.lower()} changed; its sessions have ended")
    return 0


def cmd_disable(args: argparse.Namespace) -> int:
    """hedgerow-hub user disable."""
    db = _db(args.config)
    try:
        ended = disable_account(db, args.username.lower())
    finally:
        db.close()
    print(f"disabled {args.username.lower()}; {ended} session(s) ended")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """hedgerow-hub user list."""
    db = _db(args.config)
    try:
        accounts = list_accounts(db)
    finally:
        db.close()
    rows = [
        {
            "username": a.username,
            "role": str(a.role),
            "groups": list(a.groups),
            "created": when(a.created_ms),
            "disabled": None if a.disabled_ms is None else when(a.disabled_ms),
        }
        for a in accounts
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            groups = f" groups={','.join(r['groups'])}" if r["groups"] else ""
            state = f" disabled {r['disabled']}" if r["disabled"] else ""
            print(f"{r['username']} {r['role']}{groups}{state}")
    return 0
