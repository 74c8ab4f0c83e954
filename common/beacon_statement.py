"""The on-site beacon (docs/protocol.md, "Beacon").

A laptop asks the school's DNS filter for TXT `<nonce>.beacon.hedgerow.internal`. The filter
answers with a statement signed by the site beacon key: site, nonce and time. Only a resolver
holding that key (the school's Pi) can produce it, so no home router can make a laptop believe
it is on site. The laptop checks the signature with the beacon public key from its signed
policy, that the nonce is the one it just sent, and that the time is fresh.

TXT payload (one character-string, ASCII):  hedgerow-beacon=1;<site>;<nonce>;<time_ms>;<sig>
where <sig> is base64url (no padding) of Ed25519 over b"hedgerow-beacon/1\\x00" + the same text
up to and including the last ';'.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from common.errors import HedgerowError
from common.wire.errors import OpenError
from common.wire.signing import SigningKey, VerifyKey

SUFFIX = "beacon.hedgerow.internal"
PREFIX = "hedgerow-beacon=1"
CONTEXT = b"hedgerow-beacon/1\x00"
NONCE = re.compile(r"^[a-z0-9]{16,63}$")
DEFAULT_MAX_AGE_MS = 30_000


class BeaconError(HedgerowError):
    """A beacon statement is missing, malformed, stale, for another nonce, or forged."""


@dataclass(frozen=True, slots=True)
class BeaconStatement:
    """A verified statement that a site's resolver answered this nonce at this time."""

    site: str
    nonce: str
    time_ms: int


def nonce_of(qname: str) -> str | None:
    """The nonce if `qname` (normalised) is a beacon query, else None."""
    if not qname.endswith("." + SUFFIX):
        return None
    nonce = qname[: -len(SUFFIX) - 1]
    return nonce if NONCE.fullmatch(nonce) else None


def make_statement(key: SigningKey, site: str, nonce: str, time_ms: int) -> bytes:
    """The TXT character-string the filter answers with (at most 255 bytes)."""
    body = f"{PREFIX};{site};{nonce};{time_ms};"
    sig = base64.urlsafe_b64encode(key.sign(CONTEXT + body.encode("ascii"))).rstrip(b"=")
    return body.encode("ascii") + sig


def verify_statement(
    txt: bytes,
    *,
    keys: tuple[VerifyKey, ...],
    site: str,
    nonce: str,
    now_ms: int,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
) -> BeaconStatement:
    """Check a TXT answer; raises BeaconError unless it is fresh, for us and signed by the site."""
    try:
        text = txt.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BeaconError("beacon answer is not ASCII") from exc
    body, sep, sig_text = text.rpartition(";")
    parts = body.split(";")
    if not sep or len(parts) != 4 or parts[0] != PREFIX:
        raise BeaconError("not a Hedgerow beacon statement")
    _, got_site, got_nonce, time_text = parts
    if got_site != site or got_nonce != nonce:
        raise BeaconError(f"statement is for {got_site}/{got_nonce}, not {site}/{nonce}")
    if not time_text.isdigit() or abs(now_ms - int(time_text)) > max_age_ms:
        raise BeaconError("statement time is not within the allowed clock window")
    try:
        sig = base64.urlsafe_b64decode(sig_text + "=" * (-len(sig_text) % 4))
    except ValueError as exc:
        raise BeaconError("signature is not base64url") from exc
    message = CONTEXT + (body + ";").encode("ascii")
    for key in keys:
        try:
            key.verify(sig, message)
        except OpenError:
            continue
        return BeaconStatement(got_site, got_nonce, int(time_text))
    raise BeaconError("statement is not signed by this site's beacon key")
