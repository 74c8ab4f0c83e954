"""Sealed envelopes: header || HPKE ciphertext || Ed25519 signature (docs/protocol.md).

Devices seal to the hub; the hub opens through one pipeline whose order is the contract:
size, header, device known and not revoked, signature, replay window, decrypt, schema.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from common.wire import payload
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import Header, Kind, SuiteId, decode_header
from common.wire.signing import SIGNATURE_LEN, SigningKey, VerifyKey
from common.wire.suites import OpeningKey, SealingKey

log = logging.getLogger(__name__)

MAX_ENVELOPE = 256 * 1024
ENROLL_PREFIX = "enroll-"
DEVICE_KINDS = frozenset({Kind.SUMMARY, Kind.EVENT, Kind.HEARTBEAT})


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified, decrypted, schema-checked envelope."""

    header: Header
    payload: dict[str, Any]
    digest: bytes  # SHA-256 of the whole envelope
    body: bytes = b""  # the decrypted JSON text the payload was parsed from


@dataclass(frozen=True, slots=True)
class Duplicate:
    """An exact redelivery of an envelope already accepted: acknowledge it, store nothing."""

    header: Header
    digest: bytes


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the hub knows of a device when opening its envelopes."""

    verify_key: VerifyKey
    revoked: bool = False


class DeviceDirectory(Protocol):
    """Looks up a device's signing key (the hub's store implements it)."""

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        """The device's record, or None if the hub has never enrolled it."""


class ReplayGuard(Protocol):
    """Decides whether (device, seq) is new, an exact duplicate, or a replay."""

    def check(self, header: Header, digest: bytes) -> bool:
        """True if this exact envelope was already accepted; raise OpenError(replay) if it is old
        or conflicts with an accepted one; False if it is new."""


class Keyring(Protocol):
    """The hub's HPKE private keys by key id (current and rotated-out ones)."""

    def opening_key(self, key_id: bytes) -> OpeningKey | None:
        """The private key with this id, or None."""


class _Contained:
    """The contract: nothing but OpenError escapes opening, whatever bytes arrive. A class, not
    @contextmanager: the hub enters it for every envelope, and a generator costs more."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception) and not isinstance(exc, OpenError):
            log.warning("unexpected error opening %s: %r", self.what, exc)
            raise OpenError(Reason.MALFORMED, "unexpected error") from exc


def seal(
    kind: Kind,
    document: Mapping[str, Any],
    *,
    site: str,
    device: str,
    seq: int,
    time_ms: int,
    to: SealingKey,
    signer: SigningKey,
) -> bytes:
    """Seal `document` to `to` and sign it with `signer`. Raises WireError for bad arguments."""
    body = payload.encode(kind, document)
    header = Header(kind, to.suite, site, device, seq, time_ms, to.key_id).encode()
    ciphertext = to.seal(body, info=header)
    envelope = header + ciphertext + signer.sign(header + ciphertext)
    if len(envelope) > MAX_ENVELOPE:
        raise WireError(f"envelope of {len(envelope)} bytes exceeds {MAX_ENVELOPE}")
    return envelope


def split(data: bytes) -> tuple[Header, bytes, bytes, bytes]:
    """Check size and header; return (header, header bytes, ciphertext, signature)."""
    if len(data) > MAX_ENVELOPE:
        raise OpenError(Reason.TOO_LARGE, f"{len(data)} bytes > {MAX_ENVELOPE}")
    header, end = decode_header(data)
    if len(data) < end + SIGNATURE_LEN + 1:
        raise OpenError(Reason.MALFORMED, "no room for body and signature")
    return header, data[:end], data[end:-SIGNATURE_LEN], data[-SIGNATURE_LEN:]


def unseal(data: bytes, *, signer: VerifyKey, key: OpeningKey, kind: Kind) -> Opened:
    """Open an envelope from a known signer to a known key (device side, and tests)."""
    with _Contained("envelope"):
        header, raw_header, ciphertext, signature = split(data)
        if header.kind is not kind:
            raise OpenError(Reason.MALFORMED, f"expected kind {kind.name}, got {header.kind.name}")
        signer.verify(signature, raw_header + ciphertext)
        return _decrypt(header, raw_header, ciphertext, hashlib.sha256(data).digest(), key)


def open_envelope(
    data: bytes, *, devices: DeviceDirectory, keyring: Keyring, replay: ReplayGuard
) -> Opened | Duplicate:
    """The hub's opening pipeline for device envelopes. Raises only OpenError."""
    with _Contained("envelope"):
        return _open(data, devices, keyring, replay)


@dataclass(frozen=True, slots=True)
class Screened:
    """An envelope past the cheap steps of the pipeline, before its signature is checked."""

    header: Header
    record: DeviceRecord


def screen(data: bytes, *, devices: DeviceDirectory) -> Screened:
    """The steps of open_envelope before the signature (size, header, device known and not
    revoked), which cost microseconds: a hub can refuse on them before spending on the rest.
    Raises only OpenError, the one open_envelope would raise."""
    with _Contained("envelope"):
        header, _, _, _, record = _screen(data, devices)
        return Screened(header, record)


def _screen(
    data: bytes, devices: DeviceDirectory
) -> tuple[Header, bytes, bytes, bytes, DeviceRecord]:
    header, raw_header, ciphertext, signature = split(data)
    if header.kind not in DEVICE_KINDS:
        raise OpenError(Reason.MALFORMED, f"kind {header.kind.name} is not a device report")
    if header.suite is SuiteId.NONE:
        raise OpenError(Reason.MALFORMED, "device reports must be sealed")
    record = devices.device_record(header.site, header.device)
    if record is None:
        raise OpenError(Reason.UNKNOWN_DEVICE, f"{header.site}/{header.device}")
    if record.revoked:
        raise OpenError(Reason.REVOKED, f"{header.site}/{header.device}")
    return header, raw_header, ciphertext, signature, record


def _open(
    data: bytes, devices: DeviceDirectory, keyring: Keyring, replay: ReplayGuard
) -> Opened | Duplicate:
    header, raw_header, ciphertext, signature, record = _screen(data, devices)
    record.verify_key.verify(signature, raw_header + ciphertext)
    digest = hashlib.sha256(data).digest()
    if replay.check(header, digest):
        return Duplicate(header, digest)
    key = keyring.opening_key(header.key_id)
    return _decrypt(header, raw_header, ciphertext, digest, key)


def _decrypt(
    header: Header, raw_header: bytes, ciphertext: bytes, digest: bytes, key: OpeningKey | None
) -> Opened:
    if key is None or key.key_id != header.key_id or key.suite is not header.suite:
        raise OpenError(Reason.WRONG_KEY, f"not sealed to a key held here ({header.key_id.hex()})")
    body = key.open(ciphertext, info=raw_header)
    return Opened(header, payload.decode(header.kind, body), digest, body)


def enroll_request_id(public: bytes) -> str:
    """The device field of an enrolment request: derived from the new device's public key."""
    return ENROLL_PREFIX + base64.b32encode(public).decode("ascii").rstrip("=").lower()


def enroll_request_key(device: str) -> VerifyKey:
    """The public key an enrolment request id encodes; raises OpenError(malformed)."""
    if not device.startswith(ENROLL_PREFIX):
        raise OpenError(Reason.MALFORMED, "not an enrolment request id")
    text = device[len(ENROLL_PREFIX) :].upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
        return VerifyKey(raw)
    except (ValueError, WireError) as exc:
        raise OpenError(Reason.MALFORMED, "bad enrolment request id") from exc


def open_enroll_request(data: bytes, *, keyring: Keyring) -> Opened:
    """Open an enrolment request: the signer's key is the one its device field names.

    Proof of possession comes before decryption, as for every envelope. Raises only OpenError.
    """
    with _Contained("enrolment request"):
        header, raw_header, ciphertext, signature = split(data)
        if header.kind is not Kind.ENROLL:
            raise OpenError(Reason.MALFORMED, "not an enrolment request")
        enroll_request_key(header.device).verify(signature, raw_header + ciphertext)
        digest = hashlib.sha256(data).digest()
        return _decrypt(header, raw_header, ciphertext, digest, keyring.opening_key(header.key_id))
