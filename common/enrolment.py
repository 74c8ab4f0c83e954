"""Enrolment as both sides speak it: the token format, the broker account of devices not yet
enrolled, the bundle's type and the enrolment errors (docs/enrolment.md).

The device's enrolment client is agent/enrolment_client.py; the hub's side is hub/enroll/.
"""

from __future__ import annotations

import base64
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
ENROLL_USER = "enroll"  # the broker account of devices not yet enrolled (not a secret)
ENROLL_PASSWORD = "enroll"
BUNDLE_TYPE = "hedgerow-enroll-bundle"


class EnrollError(HedgerowError):
    """Enrolment could not be completed (bad token, no hub, bad bundle, already enrolled)."""


class EnrollRefused(EnrollError):
    """The hub answered and refused: `reason` is a short code (docs/enrolment.md)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
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
