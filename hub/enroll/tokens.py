"""Enrolment tokens: created for technicians, stored hashed, single- or N-use, expiring.

The hash is scrypt over the canonical token with a fixed salt: the token itself carries 80
random bits, so the hash need not be salted per row, and a fixed salt lets the hub find a row
by hash. The printed format is in common/enrolment.py (EnrollToken) and docs/enrolment.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from common.enrolment import EnrollError, EnrollToken
from common.identity import DEVICE_CLASSES
from common.wire.header import valid_name
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
) -> EnrollToken:
    """Make a token and store its hash. The token text is shown once and never stored."""
    check_site(site)
    if device_class not in DEVICE_CLASSES:
        raise HubError(f"class {device_class!r}: must be one of {', '.join(DEVICE_CLASSES)}")
    if group is not None and not valid_name(group):
        raise HubError(f"group {group!r}: must be 1-63 chars of [a-z0-9._-]")
    if not 1 <= uses <= 10_000:
        raise HubError(f"uses {uses}: must be 1 to 10000")
    token = EnrollToken.generate(keys.signing.verify_key)
    db.execute(
        "INSERT INTO enroll_tokens (token_hash, site, class, grp, uses_left, expires_ms, "
        "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (token_hash(token), site, device_class, group, uses, expires_ms, now_ms),
    )
    log.info("enrolment token created for %s (%s, %d use(s))", site, device_class, uses)
    return token


def find_token(db: Database, text: str, *, site: str, now_ms: int) -> TokenGrant:
    """Look a typed token up without spending it; raises TokenRefused with the reason."""
    try:
        token = EnrollToken.parse(text)
    except EnrollError as exc:
        raise TokenRefused("unknown_token", str(exc)) from exc
    hashed = token_hash(token)
    rows = db.execute(
        "SELECT site, class, grp, uses_left, expires_ms FROM enroll_tokens WHERE token_hash = ?",
        (hashed,),
    )
    if not rows:
        raise TokenRefused("unknown_token", "no such token on this hub")
    token_site, device_class, group, uses_left, expires_ms = rows[0]
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
