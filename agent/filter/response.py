"""Upstream responses as stored wire bytes: checked against the question, OPT removed, TTL
positions noted, so a cached answer is sent by patching the ID and decrementing TTLs."""

from __future__ import annotations

import struct

from agent.filter import packet
from common.errors import HedgerowError

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")
_TTL = struct.Struct("!I")
_OFFSET = struct.Struct("!H")
_LAYOUTS: dict[bytes, bytes] = {}  # TTL offsets, each layout kept once (answers share a few)
_LAYOUTS_MAX = 4096
_MINIMUM = struct.Struct("!I")
_TARGET_TYPES = packet.TARGET_TYPES
_METAS: dict[int, int] = {}  # Stored.meta values, each kept once (an int is 32 bytes)
_METAS_MAX = 4096


class ResponseError(HedgerowError):
    """An upstream reply that does not match our question or cannot be read."""


class Stored:
    """An upstream answer ready to replay: records after the question, without OPT.

    A plain class with slots, not a dataclass: one is made for every cache miss, and a frozen
    dataclass took 0.9 us to build against 0.2 here. Treat it as immutable."""

    __slots__ = (
        "aa",
        "ad",
        "body",
        "counts",
        "linked",
        "meta",
        "offsets",
        "rcode",
        "truncated",
        "ttl",
    )

    def __init__(
        self,
        rcode: int,
        aa: bool,
        ad: bool,
        truncated: bool,
        counts: tuple[int, int, int],
        body: bytes,
        offsets: bytes,
        ttl: int,
        linked: bool = True,
    ) -> None:
        self.rcode = rcode
        self.aa = aa
        self.ad = ad
        self.truncated = truncated
        self.counts = counts
        self.body = body
        # Where each record's TTL is in the body: 2-byte offsets (records_at, ttls)
        self.offsets = offsets
        self.ttl = ttl  # how long it may be cached (0: not at all)
        # False: no record names another owner (CNAME, DNAME, SVCB, HTTPS), so the answer has
        # no targets to check (packet.answer_targets need not walk it again).
        self.linked = linked
        # rcode (12 bits), AA, AD and the three section counts in one int (unpack_meta); one
        # object per distinct value, shared by every answer of that shape (most are alike)
        an, ns, ar = counts
        meta = rcode | aa << 12 | ad << 13 | an << 16 | ns << 32 | ar << 48
        self.meta = _METAS.setdefault(meta, meta) if len(_METAS) < _METAS_MAX else meta

    def ttls(self) -> list[tuple[int, int]]:
        """(offset in body, TTL as received) of each record."""
        body = self.body
        return [(at, _TTL.unpack_from(body, at)[0]) for (at,) in _OFFSET.iter_unpack(self.offsets)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stored):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in Stored.__slots__)

    __hash__ = None  # type: ignore[assignment]  # compared by value, never a dict key

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in Stored.__slots__)
        return f"Stored({fields})"


def unpack_meta(meta: int) -> tuple[int, bool, bool, tuple[int, int, int]]:
    """(rcode, aa, ad, counts) from Stored.meta."""
    counts = (meta >> 16 & 0xFFFF, meta >> 32 & 0xFFFF, meta >> 48 & 0xFFFF)
    return meta & 0xFFF, bool(meta >> 12 & 1), bool(meta >> 13 & 1), counts


def matches(data: bytes, msg_id: int, question: bytes) -> bool:
    """True if `data` is a response with our ID and our question (case-insensitive)."""
    end = 12 + len(question)
    return (
        len(data) >= end
        and (data[0] << 8 | data[1]) == msg_id
        and data[2] & 0x80 != 0  # QR: a response
        and data[4] == 0
        and data[5] == 1  # one question
        and data[12:end].lower() == question.lower()
    )


def parse_response(data: bytes, question: bytes) -> Stored:
    """Read a matching response (see matches()); raises ResponseError if it is broken."""
    _, flags, _, an, ns, ar = _HEADER.unpack_from(data)
    rcode = flags & 0xF
    off = start = 12 + len(question)
    end = len(data)
    offsets: list[int] = []
    min_ttl = -1
    soa_ttl = 0
    opt_at = -1  # where the OPT record starts, if there is one
    linked = False
    answers = an + ns
    skip_name, unpack_rr = packet._skip_name, _RR.unpack_from
    for index in range(answers + ar):
        # Most owner names are a compression pointer to the question: two bytes.
        name_len = 2 if off < end and data[off] >= 0xC0 else skip_name(data, off)
        rdata_off = off + name_len + 10
        if name_len < 0 or rdata_off > end:
            raise ResponseError("record is cut short")
        rtype, _, ttl, rdlen = unpack_rr(data, rdata_off - 10)
        next_off = rdata_off + rdlen
        if next_off > end:
            raise ResponseError("record data is cut short")
        if rtype == packet.OPT:
            if opt_at >= 0 or index < answers:
                raise ResponseError("OPT outside the additional section or repeated")
            rcode |= (ttl >> 24) << 4
            opt_at = off
        elif opt_at >= 0:
            # Removing a record from the middle would move names that later pointers use.
            raise ResponseError("OPT is not the last record")
        else:
            offsets.append(rdata_off - 6 - start)
            if min_ttl < 0 or ttl < min_ttl:
                min_ttl = ttl
            if rtype in _TARGET_TYPES:
                linked = True
            elif rtype == packet.SOA and an <= index < answers and rdlen >= 20:
                minimum = _MINIMUM.unpack_from(data, next_off - 4)[0]
                soa_ttl = min(ttl, minimum)
        off = next_off
    if opt_at >= 0:
        body = data[start:opt_at]
        ar -= 1
    else:
        body = data[start:off]
    truncated = bool(flags & 0x0200)
    if truncated or rcode not in (packet.NOERROR, packet.NXDOMAIN):
        cache_ttl = 0
    elif rcode == packet.NXDOMAIN or an == 0:
        cache_ttl = soa_ttl  # RFC 2308: negative answers live for the SOA minimum
    else:
        cache_ttl = min_ttl if min_ttl > 0 else 0
    return Stored(
        rcode,
        bool(flags & 0x0400),
        bool(flags & 0x0020),
        truncated,
        (an, ns, ar),
        bytes(body),
        _layout(offsets),
        cache_ttl,
        linked,
    )


def _layout(offsets: list[int]) -> bytes:
    """The offsets packed (2 bytes each), one shared object per layout."""
    if len(offsets) == 1:  # most answers: one record
        raw = _OFFSET.pack(offsets[0])
    else:
        raw = struct.pack(f"!{len(offsets)}H", *offsets)
    shared = _LAYOUTS.get(raw)
    if shared is None:
        shared = raw
        if len(_LAYOUTS) < _LAYOUTS_MAX:
            _LAYOUTS[raw] = raw
    return shared


def records_at(body: bytes, offsets: bytes, age: int) -> bytes:
    """The record bytes with every TTL lowered by `age` seconds (not below 0)."""
    if not age or not offsets:
        return body
    patched = bytearray(body)
    for (offset,) in _OFFSET.iter_unpack(offsets):
        ttl = _TTL.unpack_from(body, offset)[0]
        _TTL.pack_into(patched, offset, ttl - age if ttl > age else 0)
    return bytes(patched)


def render(stored: Stored, q: packet.Query, age: int = 0) -> bytes:
    """The stored answer for this client's query, TTLs lowered by `age` seconds."""
    records = records_at(stored.body, stored.offsets, age)
    ad = stored.ad and (q.do or bool(q.flags & 0x0020))
    return packet.build(q, stored.rcode, records, stored.counts, aa=stored.aa, ad=ad)
