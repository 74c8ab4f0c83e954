"""The envelope header and its canonical byte encoding (docs/protocol.md, "Header")."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum

from common.wire.errors import OpenError, Reason, WireError

MAGIC = b"HW"
VERSION = 1
KEY_ID_LEN = 8
_FIXED = struct.Struct(">2sBBBBQQ8s")  # magic, version, kind, suite, flags, seq, time_ms, key id
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_U63 = (1 << 63) - 1  # one bound for every integer on the wire (docs/protocol.md)


class Kind(IntEnum):
    """What an envelope carries. Values are wire constants."""

    SUMMARY = 1
    EVENT = 2
    HEARTBEAT = 3
    ENROLL = 4
    POLICY = 5


class SuiteId(IntEnum):
    """How the body is protected. Values are wire constants."""

    NONE = 0  # signed only: hub-to-device policy
    MLKEM768_X25519 = 1  # default: ML-KEM-768+X25519, HKDF-SHA256, ChaCha20-Poly1305
    X25519 = 2  # small devices: X25519, HKDF-SHA256, ChaCha20-Poly1305


def valid_name(name: str) -> bool:
    """True if `name` is a valid site or device id: lower-case, topic-safe, 1 to 63 chars."""
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True, slots=True)
class Header:
    """Who sent what, when, in which order, sealed to which hub key."""

    kind: Kind
    suite: SuiteId
    site: str
    device: str
    seq: int
    time_ms: int
    key_id: bytes
    version: int = VERSION

    def __post_init__(self) -> None:
        if not valid_name(self.site):
            raise WireError(f"site id {self.site!r} is not 1-63 chars of [a-z0-9._-]")
        site_wide_policy = self.kind is Kind.POLICY and self.device == ""
        if not site_wide_policy and not valid_name(self.device):
            raise WireError(f"device id {self.device!r} is not 1-63 chars of [a-z0-9._-]")
        if not 1 <= self.seq <= MAX_U63:
            raise WireError(f"seq {self.seq} is outside 1..2^63-1")
        if not 0 <= self.time_ms <= MAX_U63:
            raise WireError(f"time_ms {self.time_ms} is outside 0..2^63-1")
        if len(self.key_id) != KEY_ID_LEN:
            raise WireError(f"key id must be {KEY_ID_LEN} bytes")

    def encode(self) -> bytes:
        """The canonical bytes: the same header always encodes to the same bytes."""
        site = self.site.encode("ascii")
        device = self.device.encode("ascii")
        fixed = _FIXED.pack(
            MAGIC, self.version, self.kind, self.suite, 0, self.seq, self.time_ms, self.key_id
        )
        return b"".join((fixed, bytes([len(site)]), site, bytes([len(device)]), device))


def decode_header(data: bytes) -> tuple[Header, int]:
    """Parse a header from the front of `data`; return it and its length. Raises OpenError(malformed)."""
    if len(data) < _FIXED.size + 2:
        raise OpenError(Reason.MALFORMED, "shorter than a header")
    magic, version, kind, suite, flags, seq, time_ms, key_id = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise OpenError(Reason.MALFORMED, "bad magic")
    if version != VERSION:
        raise OpenError(Reason.MALFORMED, f"unsupported version {version}")
    if flags != 0:
        raise OpenError(Reason.MALFORMED, "reserved flags set")
    pos = _FIXED.size
    names: list[str] = []
    for _ in range(2):
        if pos >= len(data):
            raise OpenError(Reason.MALFORMED, "truncated header")
        n = data[pos]
        raw = data[pos + 1 : pos + 1 + n]
        if len(raw) != n:
            raise OpenError(Reason.MALFORMED, "truncated header")
        try:
            names.append(raw.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise OpenError(Reason.MALFORMED, "non-ASCII id") from exc
        pos += 1 + n
    try:
        header = Header(
            kind=Kind(kind),
            suite=SuiteId(suite),
            site=names[0],
            device=names[1],
            seq=seq,
            time_ms=time_ms,
            key_id=bytes(key_id),
            version=version,
        )
    except (ValueError, WireError) as exc:
        raise OpenError(Reason.MALFORMED, str(exc)) from exc
    return header, pos
