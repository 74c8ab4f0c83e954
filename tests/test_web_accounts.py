"""Accounts, passwords, sessions and the login rate limit, on a real SQLite hub database."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.store import Database
from hub.web.accounts import (
    AccountError,
    add_account,
    authenticate,
    disable_account,
    list_accounts,
    set_password,
)
from hub.web.passwords import PasswordError, hash_password, verify_password
from hub.web.permissions import Role
from hub.web.ratelimit import LimitPolicy, LoginLimiter
from hub.web.sessions import (
    SessionLimits,
    csrf_token,
    csrf_valid,
    end_session,
    open_session,
    session_account,
)
from tests.web_support import PASSWORD, hub_cli, init_hub

LIMITS = SessionLimits(absolute_ms=3_600_000, idle_ms=600_000)


def test_passwords_are_argon2id_and_checked() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "x")
    assert not verify_password(None, PASSWORD)  # no such account
    assert not verify_password("not a hash", PASSWORD)
    with pytest.raises(PasswordError):
        hash_password("short")


def test_accounts_log_in_until_disabled(db: Database) -> None:
    add_account(db, "dana", Role.DSL, PASSWORD)
    add_account(db, "lee", Role.DSL_LIMITED, PASSWORD, ("y7", "y8"))
    assert [(a.username, a.role, a.groups) for a in list_accounts(db)] == [
        ("dana", Role.DSL, ()),
        ("lee", Role.DSL_LIMITED, ("y7", "y8")),
    ]
    account = authenticate(db, "dana", PASSWORD)
    assert account is not None and account.principal.role is Role.DSL
    assert authenticate(db, "dana", "wrong password here") is None
    assert authenticate(db, "nobody", PASSWORD) is None
    session = open_session(db, account, LIMITS, "127.0.0.1")
    assert session_account(db, session, LIMITS) == account
    assert disable_account(db, "dana") == 1
    assert session_account(db, session, LIMITS) is None
    assert authenticate(db, "dana", PASSWORD) is None


@pytest.mark.parametrize(
    ("username", "role", "groups", "message"),
    [
        ("Bad Name", Role.DSL, (), "username"),
        ("lee", Role.DSL_LIMITED, (), "needs at least one --group"),
        ("gov", Role.GOVERNOR, ("y7",), "only for dsl_limited"),
    ],
)
def test_bad_accounts_are_refused(
    db: Database, username: str, role: Role, groups: tuple[str, ...], message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        add_account(db, username, role, PASSWORD, groups)


def test_sessions_store_only_a_digest_and_end(db: Database) -> None:
    account = add_account(db, "dana", Role.DSL, PASSWORD)
    session = open_session(db, account, LIMITS, "127.0.0.1")
    assert len(session) >= 43  # 32 random bytes, base64url
    stored = [r[0] for r in db.execute("SELECT id_hash FROM web_sessions")]
    assert session not in stored and len(stored[0]) == 64
    assert csrf_valid(session, csrf_token(session))
    other = open_session(db, account, LIMITS, "127.0.0.1")
    assert not csrf_valid(other, csrf_token(session))  # tied to its session
    end_session(db, session)
    assert session_account(db, session, LIMITS) is None
    assert session_account(db, other, LIMITS) == account
    set_password(db, "dana", PASSWORD + " new")  # a new password ends every session
    assert session_account(db, other, LIMITS) is None


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(4, 0.0), (5, 60.0), (6, 120.0), (7, 240.0), (12, 3600.0), (20, 3600.0)],
)
def test_failures_cost_a_growing_wait(failures: int, wait: float) -> None:
    clock = Clock()
    limiter = LoginLimiter(LimitPolicy(address_failures=100), clock)
    for _ in range(failures):
        limiter.failed("dana", "10.0.0.1")
    assert limiter.wait_s("dana", "10.0.0.1") == wait
    assert limiter.wait_s("lee", "10.0.0.2") == 0.0  # other accounts and addresses unaffected


def test_the_wait_ends_and_old_failures_are_forgotten() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock=clock)
    for _ in range(5):
        limiter.failed("dana", "10.0.0.1")
    clock.now += 61
    assert limiter.wait_s("dana", "10.0.0.1") == 0.0
    limiter.failed("dana", "10.0.0.1")
    assert limiter.wait_s("dana", "10.0.0.1") == 120.0
    clock.now += 16 * 60  # beyond the window: forgotten
    assert limiter.wait_s("dana", "10.0.0.1") == 0.0


def test_one_address_trying_many_accounts_is_limited_too() -> None:
    limiter = LoginLimiter(clock=Clock())
    for i in range(20):
        limiter.failed(f"user{i}", "10.0.0.9")
    assert limiter.wait_s("someone-new", "10.0.0.9") == 60.0
    assert limiter.wait_s("someone-new", "10.0.0.10") == 0.0


def test_success_clears_the_accounts_failures() -> None:
    limiter = LoginLimiter(clock=Clock())
    for _ in range(4):
        limiter.failed("dana", "10.0.0.1")
    limiter.succeeded("dana")
    limiter.failed("dana", "10.0.0.1")
    assert limiter.wait_s("dana", "10.0.0.1") == 0.0


def test_user_command(tmp_path: Path) -> None:
    config = init_hub(tmp_path / "hub", "mqtt://127.0.0.1:1883", 'listen = "127.0.0.1:8080"\n')
    c = str(config)
    add = hub_cli("user", "add", "--config", c, "dana", "--role", "dsl", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    assert add.returncode == 0, add.stderr
    short = hub_cli("user", "add", "--config", c, "lee", "--role", "dsl", "--password-stdin",
                    stdin="short\n")  # fmt: skip
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    no_tty = hub_cli("user", "add", "--config", c, "lee", "--role", "dsl", stdin="")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    passwd = hub_cli("user", "passwd", "--config", c, "dana", "--password-stdin",
                     stdin="another long password\n")  # fmt: skip
    assert passwd.returncode == 0, passwd.stderr
    assert hub_cli("user", "disable", "--config", c, "dana").returncode == 0
    listed = hub_cli("user", "list", "--config", c)
    assert listed.returncode == 0 and listed.stdout.startswith("dana dsl disabled ")
    # The password is never an argument.
    assert (
        hub_cli("user", "add", "--config", c, "x", "--role", "dsl", "--password", "p").returncode
        == 2
    )
