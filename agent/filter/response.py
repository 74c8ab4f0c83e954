"""Upstream responses as stored wire bytes: checked against the question, OPT removed, TTL
positions noted, so a cached answer is sent by patching the ID and decrementing TTLs."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from agent.filter import packet
from common.errors import HedgerowError

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")
_TTL = struct.Struct("!I")
_MINIMUM = struct.Struct("!I")


class ResponseError(HedgerowError):
    """An upstream reply that does not match our question or cannot be read."""


@dataclass(frozen=True, slots=True)
class Stored:
    """An upstream answer ready to replay: records after the question, without OPT."""

    rcode: int
    aa: bool
    ad: bool
    truncated: bool
    counts: tuple[int, int, int]
    body: bytes
    ttls: tuple[tuple[int, int], ...]  # (offset in body, TTL as received)
    ttl: int  # how long it may be cached (0: not at all)


def matches(data: bytes, msg_id: int, question: bytes) -> bool:
    """True if `data` is a response with our ID and our question (case-insensitive)."""
    if len(data) < 12 + len(question):
        return False
    got_id, flags, qd = struct.unpack_from("!3H", data)
    if got_id != msg_id or not flags & 0x8000 or qd != 1:
        return False
    return data[12 : 12 + len(question)].lower() == question.lower()


def parse_response(data: bytes, question: bytes) -> Stored:
    """Read a matching response (see matches()); raises ResponseError if it is broken."""
    _, flags, _, an, ns, ar = _HEADER.unpack_from(data)
    rcode = flags & 0xF
    off = 12 + len(question)
    start = off
    end = len(data)
    ttls: list[tuple[int, int]] = []
    min_ttl: int | None = None
    soa_ttl: int | None = None
    opt_span: tuple[int, int] | None = None
    counts = [an, ns, ar]
    for index in range(an + ns + ar):
        name_len = packet._skip_name(data, off)
        if name_len < 0 or off + name_len + 10 > end:
            raise ResponseError("record is cut short")
        rtype, _, ttl, rdlen = _RR.unpack_from(data, off + name_len)
        rdata_off = off + name_len + 10
        next_off = rdata_off + rdlen
        if next_off > end:
            raise ResponseError("record data is cut short")
        if rtype == packet.OPT:
            if opt_span is not None or index < an + ns:
                raise ResponseError("OPT outside the additional section or repeated")
            rcode |= (ttl >> 24) << 4
            opt_span = (off, next_off)
            counts[2] -= 1
        else:
            ttls.append((off + name_len + 4 - start, ttl))
            min_ttl = ttl if min_ttl is None else min(min_ttl, ttl)
            if rtype == packet.SOA and an <= index < an + ns and rdlen >= 20:
                minimum = _MINIMUM.unpack_from(data, next_off - 4)[0]
                soa_ttl = min(ttl, minimum)
        off = next_off
    body = data[start:off]
    if opt_span is not None:
        if opt_span[1] != off:
            # Removing a record from the middle would move names that later pointers use.
            raise ResponseError("OPT is not the last record")
        body = data[start : opt_span[0]]
    truncated = bool(flags & 0x0200)
    if truncated or rcode not in (packet.NOERROR, packet.NXDOMAIN):
        cache_ttl = 0
    elif rcode == packet.NXDOMAIN or an == 0:
        cache_ttl = soa_ttl or 0  # RFC 2308: negative answers live for the SOA minimum
    else:
        cache_ttl = min_ttl or 0
    return Stored(
        rcode,
        bool(flags & 0x0400),
        bool(flags & 0x0020),
        truncated,
        (counts[0], counts[1], counts[2]),
        bytes(body),
        tuple(ttls),
        cache_ttl,
    )


def render(stored: Stored, q: packet.Query, age: int = 0) -> bytes:
    """The stored answer for this client's query, TTLs lowered by `age` seconds."""
    if age and stored.ttls:
        body = bytearray(stored.body)
        for offset, ttl in stored.ttls:
            _TTL.pack_into(body, offset, ttl - age if ttl > age else 0)
        records = bytes(body)
    else:
        records = stored.body
    ad = stored.ad and (q.do or bool(q.flags & 0x0020))
    return packet.build(q, stored.rcode, records, stored.counts, aa=stored.aa, ad=ad)
