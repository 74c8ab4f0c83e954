"""Hand-built DNS messages for the benchmark's fake upstream and probes.

Only what the benchmark needs: one question, A/AAAA answers, no compression on input.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
RCODE_NOERROR = 0
RCODE_FORMERR = 1
HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")


class WireError(ValueError):
    """A DNS message the benchmark cannot read."""


@dataclass(frozen=True)
class Question:
    """The one question of a query: where it ends in the message, and its type."""

    end: int
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Reply:
    """What a probe needs to know about an answer."""

    ident: int
    rcode: int
    addresses: tuple[str, ...]


def encode_name(name: str) -> bytes:
    """Encode a dotted name as DNS labels."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise WireError(f"bad label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def build_query(name: str, qtype: int = TYPE_A, ident: int = 0) -> bytes:
    """A recursion-desired query for one name."""
    return (
        HEADER.pack(ident, 0x0100, 1, 0, 0, 0)
        + encode_name(name)
        + struct.pack("!HH", qtype, CLASS_IN)
    )


def read_question(msg: bytes) -> Question:
    """Find the end of the first question (uncompressed, as every client sends it)."""
    if len(msg) < HEADER.size + 5:
        raise WireError("message too short")
    pos = HEADER.size
    while True:
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length >= 64:
            raise WireError("compressed or bad label in question")
        pos += length + 1
        if pos >= len(msg):
            raise WireError("question runs past the end")
    if pos + 4 > len(msg):
        raise WireError("question has no type and class")
    qtype, qclass = struct.unpack_from("!HH", msg, pos)
    return Question(pos + 4, qtype, qclass)


def _skip_name(msg: bytes, pos: int) -> int:
    while True:
        length = msg[pos]
        if length == 0:
            return pos + 1
        if length >= 0xC0:
            return pos + 2
        pos += length + 1


def parse_reply(msg: bytes) -> Reply:
    """Read the id, rcode and A/AAAA addresses of a reply."""
    try:
        ident, flags, qdcount, ancount, _, _ = HEADER.unpack_from(msg)
        pos = HEADER.size
        for _ in range(qdcount):
            pos = _skip_name(msg, pos) + 4
        addresses: list[str] = []
        for _ in range(ancount):
            pos = _skip_name(msg, pos)
            rtype, _, _, rdlen = RR_FIXED.unpack_from(msg, pos)
            pos += RR_FIXED.size
            rdata = msg[pos : pos + rdlen]
            if rtype in (TYPE_A, TYPE_AAAA) and len(rdata) in (4, 16):
                addresses.append(str(ipaddress.ip_address(rdata)))
            pos += rdlen
    except (struct.error, IndexError) as exc:
        raise WireError("truncated reply") from exc
    return Reply(ident, flags & 0x000F, tuple(addresses))
