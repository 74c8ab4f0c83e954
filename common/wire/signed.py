"""Hub-to-device messages (policy, configuration): header || JSON body || Ed25519 signature.

Signed, not sealed: a policy holds no personal data and a whole site must be able to read it.
The header's seq is the message's version; devices accept only versions that do not go down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.wire import payload
from common.wire.envelope import MAX_ENVELOPE, _Contained, split
from common.wire.errors import OpenError, Reason
from common.wire.header import Header, Kind, SuiteId
from common.wire.signing import SigningKey, VerifyKey


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A verified hub message: its header (seq is the version) and document."""

    header: Header
    payload: dict[str, Any]

    @property
    def version(self) -> int:
        """The version that only goes up."""
        return self.header.seq


def sign_message(
    document: Mapping[str, Any],
    *,
    site: str,
    device: str,
    version: int,
    time_ms: int,
    signer: SigningKey,
    kind: Kind = Kind.POLICY,
) -> bytes:
    """Sign a hub document for one device, or for a whole site when `device` is ""."""
    body = payload.encode(kind, document)
    header = Header(kind, SuiteId.NONE, site, device, version, time_ms, signer.verify_key.key_id)
    raw = header.encode()
    message = raw + body + signer.sign(raw + body)
    if len(message) > MAX_ENVELOPE:
        raise OpenError(Reason.TOO_LARGE, f"signed message of {len(message)} bytes")
    return message


def open_signed(
    data: bytes,
    *,
    hub_keys: Iterable[VerifyKey],
    site: str,
    device: str,
    min_version: int = 0,
    kind: Kind = Kind.POLICY,
) -> SignedMessage:
    """Verify a hub message addressed to this device (or its site). Raises only OpenError.

    A version below `min_version` is a `replay`: devices never go back to an older policy.
    """
    with _Contained("signed message"):
        header, raw_header, body, signature = split(data)
        if header.kind is not kind or header.suite is not SuiteId.NONE:
            raise OpenError(Reason.MALFORMED, f"not a signed {kind.name.lower()} message")
        key = next((k for k in hub_keys if k.key_id == header.key_id), None)
        if key is None:
            raise OpenError(Reason.WRONG_KEY, "not signed by a hub key this device trusts")
        key.verify(signature, raw_header + body)
        if header.site != site or header.device not in ("", device):
            raise OpenError(Reason.UNKNOWN_DEVICE, f"addressed to {header.site}/{header.device}")
        if header.seq < min_version:
            raise OpenError(Reason.REPLAY, f"version {header.seq} is older than {min_version}")
        return SignedMessage(header, payload.decode(kind, body))
