"""Reading the answer section of a reply by hand, for the laptop agent's own checks.

The tamper check (an A answer from whatever the OS resolver is) and the site beacon (TXT
answers) read replies every minute or so. dnscodec.py could do it, but it is the module that
imports dnslib, which would then be resident in the agent for these two reads (about 1.3 MiB;
docs/benchmarks.md, hedgerow-agent footprint). What is read here is little: the rcode, and
each answer's type and data. The tests compare it with dnslib on the same messages.
"""

from __future__ import annotations

import socket
import struct

from agent.filter import packet
from agent.filter.packet import FORMERR, HEADER_LEN, TXT, A, PacketError

_HEADER = struct.Struct("!6H")
_RR = struct.Struct("!HHIH")


def _broken(what: str) -> PacketError:
    return PacketError(f"cannot parse reply: {what}", FORMERR)


def _past_name(message: bytes, off: int) -> int:
    """The offset just past the (possibly compressed) name at off; PacketError if broken."""
    length = packet._skip_name(message, off)
    if length < 0:
        raise _broken(f"a broken name at offset {off}")
    return off + length


def answers(message: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """(rcode, each answer record as (type, rdata)) of a reply; PacketError if it cannot be
    read. The rcode is the header's (an OPT record's extended bits are not added)."""
    if len(message) < HEADER_LEN:
        raise _broken(f"{len(message)} bytes, shorter than a header")
    _, flags, qdcount, ancount, _, _ = _HEADER.unpack_from(message)
    off = HEADER_LEN
    for _ in range(qdcount):
        off = _past_name(message, off) + 4
        if off > len(message):
            raise _broken("the question runs past the end")
    records: list[tuple[int, bytes]] = []
    for _ in range(ancount):
        off = _past_name(message, off)
        if off + _RR.size > len(message):
            raise _broken("a record header runs past the end")
        rtype, _, _, rdlen = _RR.unpack_from(message, off)
        off += _RR.size
        if off + rdlen > len(message):
            raise _broken("a record's data runs past the end")
        records.append((rtype, message[off : off + rdlen]))
        off += rdlen
    return flags & 0xF, records


def txt_answers(message: bytes) -> tuple[int, tuple[bytes, ...]]:
    """(rcode, each TXT answer's character-strings joined) of a reply, such as a beacon
    statement; PacketError if it cannot be read."""
    rcode, records = answers(message)
    texts: list[bytes] = []
    for rtype, rdata in records:
        if rtype != TXT:
            continue
        parts: list[bytes] = []
        off = 0
        while off < len(rdata):
            length = rdata[off]
            if off + 1 + length > len(rdata):
                raise _broken("a TXT string runs past its record")
            parts.append(rdata[off + 1 : off + 1 + length])
            off += 1 + length
        texts.append(b"".join(parts))
    return rcode, tuple(texts)


def a_answers(message: bytes) -> tuple[int, list[str]]:
    """(rcode, the IPv4 addresses of its A answers, dotted) of a reply; PacketError if it
    cannot be read (an A record whose data is not 4 bytes included)."""
    rcode, records = answers(message)
    addresses: list[str] = []
    for rtype, rdata in records:
        if rtype == A:
            if len(rdata) != 4:
                raise _broken(f"an A record of {len(rdata)} bytes")
            addresses.append(socket.inet_ntoa(rdata))
    return rcode, addresses
