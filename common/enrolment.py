"""Enrolment as both sides speak it: the token format, the broker account of devices not yet
enrolled, the bundle's type and the enrolment errors (docs/enrolment.md).

The device's enrolment client is agent/enrolment_client.py; the hub's side is hub/enroll/.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from common.errors import HedgerowError
from common.wire.signing import VerifyKey

TOKEN_PREFIX = "HW1"
FINGERPRINT_CHARS = 12  # 60 bits of the hub signing key's id
SECRET_CHARS = 16  # 80 random bits
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})
HUB_KEYS_SITE = "hub"  # header site of the retained hub-keys message
# The header device of the retained hub-keys message. Devices not yet enrolled log in to the
# broker with their token's own account (EnrollToken.login), never a shared one.
ENROLL_USER = "enroll"
LOGIN_PREFIX = "enroll-"  # token logins are enroll-<token id>
TOKEN_ID_CHARS = 12  # 60 bits of a hash of the token: names the token without revealing it
BUNDLE_TYPE = "hedgerow-enroll-bundle"


class EnrollError(HedgerowError):
    """Enrolment could not be completed (bad token, no hub, bad bundle, already enrolled)."""


class EnrollRefused(EnrollError):
    """The hub answered and refused: `reason` is a short code (docs/enrolment.md)."""

    def __init__(self, reason: str, detail: str = "", *, retry_after_s: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s  # with reason "busy": when to ask again
        super().__init__(f"hub refused enrolment: {reason}" + (f" ({detail})" if detail else ""))


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def hub_fingerprint(key: VerifyKey) -> str:
    """The short fingerprint of a hub signing key carried in tokens (base32 of its key id)."""
    return _b32(key.key_id)[:FINGERPRINT_CHARS]


@dataclass(frozen=True, slots=True)
class EnrollToken:
    """A technician's token: the hub key fingerprint and a random secret."""

    fingerprint: str
    secret: str

    @property
    def canonical(self) -> str:
        """What the hub hashes: fingerprint then secret, upper-case base32."""
        return self.fingerprint + self.secret

    @property
    def token_id(self) -> str:
        """A short public name of the token (enroll-token list/revoke, its broker login):
        lower-case base32 of a hash of the token, which cannot be turned back into it."""
        digest = hashlib.sha256(b"hedgerow-token-id/1\0" + self.canonical.encode()).digest()
        return _b32(digest)[:TOKEN_ID_CHARS].lower()

    @property
    def login(self) -> tuple[str, str]:
        """The broker account (user name, password) that devices enrolling with this token
        use: enroll-<token id> and a password only the token's holder can compute
        (docs/enrolment.md). The hub creates the account with the token."""
        digest = hashlib.sha256(b"hedgerow-token-login/1\0" + self.canonical.encode()).digest()
        password = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
        return LOGIN_PREFIX + self.token_id, password

    @property
    def text(self) -> str:
        """The printed form: HW1-XXXX-XXXX-... in groups of four."""
        body = self.canonical
        return "-".join([TOKEN_PREFIX, *(body[i : i + 4] for i in range(0, len(body), 4))])

    @classmethod
    def generate(cls, hub_key: VerifyKey) -> EnrollToken:
        """A fresh token for this hub."""
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_CHARS))
        return cls(hub_fingerprint(hub_key), secret)

    @classmethod
    def parse(cls, text: str) -> EnrollToken:
        """Read a typed token: case, spaces, dashes and 0/1/8 look-alikes are forgiven."""
        compact = "".join(text.split()).upper().replace("-", "")
        if not compact.startswith(TOKEN_PREFIX):
            raise EnrollError(f"a token starts with {TOKEN_PREFIX}-")
        body = compact[len(TOKEN_PREFIX) :].translate(_LOOKALIKES)
        if len(body) != FINGERPRINT_CHARS + SECRET_CHARS or set(body) - set(_ALPHABET):
            raise EnrollError("the token is mistyped (wrong length or characters)")
        return cls(body[:FINGERPRINT_CHARS], body[FINGERPRINT_CHARS:])
