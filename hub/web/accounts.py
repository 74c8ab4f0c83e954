"""Dashboard accounts in web_users: add, change password, disable, list, and log in."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from hub.errors import HubError
from hub.store import Database, Row
from hub.web.passwords import hash_password, needs_rehash, verify_password
from hub.web.permissions import Principal, Role

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_COLUMNS = "id, username, role, group_list, created_ms, disabled_ms"


class AccountError(HubError):
    """An account cannot be created or changed as asked."""


@dataclass(frozen=True, slots=True)
class Account:
    """One dashboard account, without its password hash."""

    id: int
    username: str
    role: Role
    groups: tuple[str, ...]
    created_ms: int
    disabled_ms: int | None

    @property
    def principal(self) -> Principal:
        """The account as the permission check sees it."""
        return Principal(self.id, self.username, self.role, frozenset(self.groups))


def account_from_row(row: Row) -> Account:
    """An Account from a row of the account columns (id, username, role, group_list, created_ms,
    disabled_ms)."""
    return Account(
        id=int(row[0]),
        username=row[1],
        role=Role(row[2]),
        groups=tuple(json.loads(row[3])),
        created_ms=int(row[4]),
        disabled_ms=None if row[5] is None else int(row[5]),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def find_account(db: Database, username: str) -> Account | None:
    """The account with this name, disabled or not."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM web_users WHERE username = ?", (username,))
    return account_from_row(rows[0]) if rows else None


def add_account(
    db: Database, username: str, role: Role, password: str, groups: tuple[str, ...] = ()
) -> Account:
    """Create an account. A dsl_limited account needs groups; other roles take none."""
    if not _USERNAME.match(username):
        raise AccountError(
            f"username {username!r}: use 1-64 of a-z, 0-9, '.', '_', '@', '-' (lower case)"
        )
    if role is Role.DSL_LIMITED and not groups:
        raise AccountError("a dsl_limited account needs at least one --group")
    if role is not Role.DSL_LIMITED and groups:
        raise AccountError(f"--group is only for dsl_limited accounts, not {role}")
    if find_account(db, username) is not None:
        raise AccountError(f"there is already an account {username!r}")
    hashed = hash_password(password)
    now = _now_ms()
    db.insert(
        "INSERT INTO web_users (username, role, group_list, password_hash, created_ms, password_ms) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (username, str(role), json.dumps(sorted(groups)), hashed, now, now),
    )
    account = find_account(db, username)
    assert account is not None
    return account


def set_password(db: Database, username: str, password: str) -> None:
    """Change an account's password and end its sessions."""
    account = _existing(db, username)
    hashed = hash_password(password)
    now = _now_ms()
    with db.transaction():
        db.execute(
            "UPDATE web_users SET password_hash = ?, password_ms = ? WHERE id = ?",
            (hashed, now, account.id),
        )
        _end_sessions(db, account.id, now)


def disable_account(db: Database, username: str) -> int:
    """Disable an account and end every session it has open; return how many were ended."""
    account = _existing(db, username)
    now = _now_ms()
    with db.transaction():
        db.execute(
            "UPDATE web_users SET disabled_ms = ? WHERE id = ? AND disabled_ms IS NULL",
            (now, account.id),
        )
        return _end_sessions(db, account.id, now)


def list_accounts(db: Database) -> list[Account]:
    """Every account, by name."""
    return [
        account_from_row(r)
        for r in db.execute(f"SELECT {_COLUMNS} FROM web_users ORDER BY username")
    ]


def authenticate(db: Database, username: str, password: str) -> Account | None:
    """The enabled account whose password this is, or None. Costs one Argon2 verification
    whether or not the account exists."""
    rows = db.execute(
        f"SELECT {_COLUMNS}, password_hash FROM web_users WHERE username = ?", (username,)
    )
    stored: str | None = rows[0][6] if rows else None
    if not verify_password(stored, password) or stored is None:
        return None
    account = account_from_row(rows[0])
    if account.disabled_ms is not None:
        return None
    if needs_rehash(stored):
        db.execute(
            "UPDATE web_users SET password_hash = ? WHERE id = ?",
            (hash_password(password), account.id),
        )
    return account


def _existing(db: Database, username: str) -> Account:
    account = find_account(db, username)
    if account is None:
        raise AccountError(f"there is no account {username!r}")
    return account


def _end_sessions(db: Database, user_id: int, now: int) -> int:
    open_ = db.execute(
        "SELECT COUNT(*) FROM web_sessions WHERE user_id = ? AND ended_ms IS NULL", (user_id,)
    )
    db.execute(
        "UPDATE web_sessions SET ended_ms = ? WHERE user_id = ? AND ended_ms IS NULL",
        (now, user_id),
    )
    return int(open_[0][0])
