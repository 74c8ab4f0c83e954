"""Server-side login sessions in web_sessions, and the CSRF token tied to each.

The cookie carries a random 256-bit id; the database keeps only its SHA-256, so a copy of the
database opens no session. A session ends at logout, when its account is disabled or its
password changed, after `idle_minutes` unused, and `session_hours` after login at the latest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from hub.store import Database
from hub.web.accounts import Account, account_from_row

_TOUCH_MS = 60_000  # last_seen is written at most once a minute: not a write per request


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How long a session lasts: in all, and unused."""

    absolute_ms: int
    idle_ms: int


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_session(db: Database, account: Account, limits: SessionLimits, client: str) -> str:
    """Start a session for the account; return the id for the cookie (never stored)."""
    session_id = secrets.token_urlsafe(32)
    now = _now_ms()
    db.execute(
        "INSERT INTO web_sessions (id_hash, user_id, created_ms, last_seen_ms, expires_ms, "
        "client) VALUES (?, ?, ?, ?, ?, ?)",
        (_digest(session_id), account.id, now, now, now + limits.absolute_ms, client[:64]),
    )
    return session_id


def session_account(db: Database, session_id: str, limits: SessionLimits) -> Account | None:
    """The enabled account of a live session, or None; keeps the session from going idle."""
    now = _now_ms()
    digest = _digest(session_id)
    rows = db.execute(
        "SELECT u.id, u.username, u.role, u.group_list, u.created_ms, u.disabled_ms, s.last_seen_ms "
        "FROM web_sessions s JOIN web_users u ON u.id = s.user_id "
        "WHERE s.id_hash = ? AND s.ended_ms IS NULL AND s.expires_ms > ? "
        "AND s.last_seen_ms > ? AND u.disabled_ms IS NULL",
        (digest, now, now - limits.idle_ms),
    )
    if not rows:
        return None
    if now - int(rows[0][6]) >= _TOUCH_MS:
        db.execute("UPDATE web_sessions SET last_seen_ms = ? WHERE id_hash = ?", (now, digest))
    return account_from_row(rows[0])


def end_session(db: Database, session_id: str) -> None:
    """Log out: the session can no longer be used."""
    db.execute(
        "UPDATE web_sessions SET ended_ms = ? WHERE id_hash = ? AND ended_ms IS NULL",
        (_now_ms(), _digest(session_id)),
    )


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: derived from its id, so nothing more is stored and a
    token from one session is worthless in another."""
    return hmac.new(session_id.encode("ascii", "replace"), b"hedgerow csrf", "sha256").hexdigest()


def csrf_valid(session_id: str, token: str) -> bool:
    """Whether a form's token belongs to this session (constant time)."""
    return hmac.compare_digest(csrf_token(session_id), token)
