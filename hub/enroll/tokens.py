"""Enrolment tokens: created for technicians, stored hashed, single- or N-use, expiring.

The hash is scrypt over the canonical token with a fixed salt: the token itself carries 80
random bits, so the hash need not be salted per row, and a fixed salt lets the hub find a row
by hash. The printed format is in common/enrolment.py (EnrollToken) and docs/enrolment.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass

from common.enrolment import LOGIN_PREFIX, EnrollError, EnrollToken
from common.identity import DEVICE_CLASSES
from common.wire.header import valid_name
from hub.enroll.passwords import hash_password
from hub.errors import HubError
from hub.keys import HubKeys
from hub.store import Database

log = logging.getLogger(__name__)

SALT = b"hedgerow-enroll-token/1"
RESERVED_SITES = ("hub", "enroll")  # would collide with hedgerow/v1/hub/... and .../enroll/...
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


class TokenRefused(HubError):
    """A token cannot be used: `reason` is the code the device is told (docs/enrolment.md)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a valid token allows: which site, class and group the new device gets."""

    token_hash: str
    site: str
    device_class: str
    group: str | None
    uses_left: int


@dataclass(frozen=True, slots=True)
class TokenRow:
    """What enroll-token list shows of a token (never the token itself)."""

    token_id: str | None  # None for a token made before tokens had ids (no broker login)
    site: str
    device_class: str
    group: str | None
    uses_left: int
    expires_ms: int
    created_ms: int
    revoked_ms: int | None

    def state(self, now_ms: int) -> str:
        """usable, spent, expired or revoked."""
        if self.revoked_ms is not None:
            return "revoked"
        if self.expires_ms <= now_ms:
            return "expired"
        return "usable" if self.uses_left > 0 else "spent"


def token_hash(token: EnrollToken) -> str:
    """The stored form of a token."""
    return hashlib.scrypt(
        token.canonical.encode("ascii"), salt=SALT, n=2**14, r=8, p=1, dklen=32
    ).hex()


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m', '90s', '2w' in milliseconds; raises HubError."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise HubError(f"duration {text!r}: use a number and s, m, h, d or w (e.g. 7d)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def check_site(site: str) -> None:
    """Raise HubError unless `site` can be enrolled into."""
    if not valid_name(site) or site in RESERVED_SITES:
        raise HubError(f"site {site!r}: must be 1-63 chars of [a-z0-9._-], not hub or enroll")


def create_token(
    db: Database,
    keys: HubKeys,
    *,
    site: str,
    device_class: str,
    group: str | None,
    uses: int,
    expires_ms: int,
    now_ms: int,
    groups: Collection[str] | None = None,
) -> EnrollToken:
    """Make a token and store its hash and its broker login's hash. The token text is shown
    once and never stored. `groups`, when given, are the groups the site's policy defines:
    a token for any other group is refused."""
    check_site(site)
    if device_class not in DEVICE_CLASSES:
        raise HubError(f"class {device_class!r}: must be one of {', '.join(DEVICE_CLASSES)}")
    if group is not None and not valid_name(group):
        raise HubError(f"group {group!r}: must be 1-63 chars of [a-z0-9._-]")
    if group is not None and groups is not None and group not in groups:
        known = ", ".join(sorted(groups)) or "none"
        raise HubError(
            f"group {group!r} is not defined in the policy of site {site} (groups: {known}); "
            "add it under [policy.groups] first"
        )
    if not 1 <= uses <= 10_000:
        raise HubError(f"uses {uses}: must be 1 to 10000")
    token = EnrollToken.generate(keys.signing.verify_key)
    _, password = token.login
    db.execute(
        "INSERT INTO enroll_tokens (token_hash, site, class, grp, uses_left, expires_ms, "
        "created_ms, token_id, login_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token_hash(token), site, device_class, group, uses, expires_ms, now_ms,
            token.token_id, hash_password(password),
        ),
    )  # fmt: skip
    log.info(
        "enrolment token %s created for %s (%s, %d use(s))", token.token_id, site,
        device_class, uses,
    )  # fmt: skip
    return token


def list_tokens(db: Database, *, site: str | None = None) -> list[TokenRow]:
    """Every token (of one site), newest first."""
    sql = (
        "SELECT token_id, site, class, grp, uses_left, expires_ms, created_ms, revoked_ms "
        "FROM enroll_tokens"
    )
    params: tuple[object, ...] = ()
    if site is not None:
        sql += " WHERE site = ?"
        params = (site,)
    rows = db.execute(sql + " ORDER BY created_ms DESC", params)
    return [
        TokenRow(
            None if r[0] is None else str(r[0]), str(r[1]), str(r[2]),
            None if r[3] is None else str(r[3]), int(r[4]), int(r[5]), int(r[6]),
            None if r[7] is None else int(r[7]),
        )
        for r in rows
    ]  # fmt: skip


def revoke_token(db: Database, token_id: str, *, now_ms: int) -> TokenRow:
    """Revoke a token by its id: it enrols nothing more, and its broker login goes with the
    next rewrite of the broker files. Raises HubError for an unknown id."""
    wanted = token_id.strip().lower()
    match = [t for t in list_tokens(db) if t.token_id == wanted]
    if not match:
        raise HubError(f"no token with id {token_id!r} (see hedgerow-hub enroll-token list)")
    if match[0].revoked_ms is None:
        db.execute(
            "UPDATE enroll_tokens SET revoked_ms = ? WHERE token_id = ?", (now_ms, wanted)
        )
        log.info("enrolment token %s revoked", wanted)
    return next(t for t in list_tokens(db) if t.token_id == wanted)


def token_logins(db: Database, now_ms: int) -> list[tuple[str, str]]:
    """(broker user, password hash) of every token that can still enrol or finish enrolling:
    not revoked and not expired (a spent token keeps its login until it expires, so the
    device that took its last use can still read its reply)."""
    rows = db.execute(
        "SELECT token_id, login_hash FROM enroll_tokens WHERE revoked_ms IS NULL "
        "AND expires_ms > ? AND token_id IS NOT NULL AND login_hash IS NOT NULL "
        "ORDER BY token_id",
        (now_ms,),
    )
    return [(LOGIN_PREFIX + str(r[0]), str(r[1])) for r in rows]


def find_token(db: Database, text: str, *, site: str, now_ms: int) -> TokenGrant:
    """Look a typed token up without spending it; raises TokenRefused with the reason."""
    try:
        token = EnrollToken.parse(text)
    except EnrollError as exc:
        raise TokenRefused("unknown_token", str(exc)) from exc
    hashed = token_hash(token)
    rows = db.execute(
        "SELECT site, class, grp, uses_left, expires_ms, revoked_ms FROM enroll_tokens "
        "WHERE token_hash = ?",
        (hashed,),
    )
    if not rows:
        raise TokenRefused("unknown_token", "no such token on this hub")
    token_site, device_class, group, uses_left, expires_ms, revoked_ms = rows[0]
    if revoked_ms is not None:
        raise TokenRefused("revoked", "the token has been revoked; ask for a new one")
    if int(expires_ms) <= now_ms:
        raise TokenRefused("expired", "the token has expired; ask for a new one")
    if int(uses_left) <= 0:
        raise TokenRefused("spent", "the token has been used up; ask for a new one")
    if token_site != site:
        raise TokenRefused("wrong_site", "the token is for another site")
    return TokenGrant(hashed, token_site, device_class, group, int(uses_left))


def spend_token(db: Database, grant: TokenGrant) -> None:
    """Use the token once (atomically: two devices cannot both take its last use)."""
    rows = db.execute(
        "UPDATE enroll_tokens SET uses_left = uses_left - 1 "
        "WHERE token_hash = ? AND uses_left > 0 RETURNING uses_left",
        (grant.token_hash,),
    )
    if not rows:
        raise TokenRefused("spent", "the token has been used up; ask for a new one")
