"""The dnslib adapter: the only module that imports dnslib (httpx's _transports model).

It is the full path: queries the fast parser declines (compressed or binary question names),
records that need decompressing (SafeSearch targets' answers), and a reference reply builder
that tests hold the fast path to.
"""

from __future__ import annotations

import ipaddress
import struct

import dnslib
from dnslib.label import DNSBuffer

from agent.filter import packet

_RECORD_TYPES = {packet.A: dnslib.A, packet.AAAA: dnslib.AAAA}


class _PlainBuffer(DNSBuffer):  # type: ignore[misc]
    """A buffer that never compresses, so packed records can be spliced into any message."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def _labels_text(labels: tuple[bytes, ...]) -> str:
    return ".".join(label.decode("ascii", "backslashreplace") for label in labels)


def parse_query(data: bytes) -> packet.Query:
    """Parse a query with dnslib; raises packet.PacketError like the fast path."""
    if len(data) < packet.HEADER_LEN:
        raise packet.PacketError("shorter than a DNS header", None)
    msg_id, flags, qd, an, ns, _ = struct.unpack_from("!6H", data)
    if flags & 0x8000:
        raise packet.PacketError("a response, not a query", None, msg_id, flags)
    if (flags >> 11) & 0xF:
        raise packet.PacketError("opcode is not QUERY", packet.NOTIMP, msg_id, flags)
    if qd != 1 or an or ns:
        raise packet.PacketError(
            "a query must hold exactly one question", packet.FORMERR, msg_id, flags
        )
    try:
        record = dnslib.DNSRecord.parse(data)
    except (dnslib.DNSError, ValueError, IndexError, struct.error) as exc:
        raise packet.PacketError(f"cannot parse: {exc}", packet.FORMERR, msg_id, flags) from exc
    question = record.questions[0]
    labels = tuple(question.qname.label)
    name_len = sum(len(label) + 1 for label in labels) + 1
    if name_len > 255 or any(len(label) > 63 for label in labels):
        raise packet.PacketError("question name is too long", packet.FORMERR, msg_id, flags)
    wire_name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    opts = [rr for rr in record.ar if rr.rtype == packet.OPT]
    if len(opts) > 1:
        raise packet.PacketError("more than one OPT", packet.FORMERR, msg_id)
    edns = bool(opts)
    ttl = opts[0].ttl if edns else 0
    return packet.Query(
        msg_id,
        flags,
        _labels_text(labels).lower(),
        question.qtype,
        question.qclass,
        wire_name + struct.pack("!HH", question.qtype, question.qclass),
        edns,
        opts[0].rclass if edns else 512,
        bool(ttl & 0x8000),
        (ttl >> 16) & 0xFF,
    )


def answer_records(message: bytes, age: int = 0) -> tuple[bytes, int]:
    """The answer section of a full message, uncompressed and with TTLs lowered by `age`."""
    try:
        record = dnslib.DNSRecord.parse(message)
    except (dnslib.DNSError, ValueError, IndexError, struct.error) as exc:
        raise packet.PacketError(f"cannot parse answer: {exc}", packet.SERVFAIL) from exc
    buffer = _PlainBuffer()
    for rr in record.rr:
        rr.ttl = max(0, rr.ttl - age)
        rr.pack(buffer)
    return bytes(buffer.data), len(record.rr)


def reference_reply(
    q: packet.Query,
    rcode: int,
    rdatas: tuple[bytes, ...] = (),
    ttl: int = 0,
    ede: tuple[int, str] | None = None,
    tc: bool = False,
) -> bytes:
    """The full-path reply that packet.build/answer/error/truncated must match (for tests)."""
    header = dnslib.DNSHeader(id=q.msg_id, bitmap=packet.reply_flags(q, rcode, tc=tc))
    reply = dnslib.DNSRecord(header)
    labels = tuple(
        dnslib.DNSRecord.parse(b"\0" * 4 + b"\0\1" + b"\0" * 6 + q.question).q.qname.label
    )
    qname = dnslib.DNSLabel(labels)
    reply.add_question(dnslib.DNSQuestion(qname, q.qtype, q.qclass))
    for rdata in rdatas:
        kind = _RECORD_TYPES[q.qtype]
        text = str(ipaddress.ip_address(rdata))
        reply.add_answer(dnslib.RR(qname, q.qtype, q.qclass if q.qclass else 1, ttl, kind(text)))
    if q.edns:
        options = []
        if ede is not None:
            options.append(
                dnslib.EDNSOption(packet.EDE_OPTION, struct.pack("!H", ede[0]) + ede[1].encode())
            )
        flags = "do" if q.do else ""
        reply.add_ar(
            dnslib.EDNS0(
                udp_len=packet.OUR_UDP_SIZE, flags=flags, ext_rcode=rcode >> 4, opts=options
            )
        )
    return bytes(reply.pack())


def describe(message: bytes) -> str:
    """A readable dump of a message (dig-like), for explain and test failures."""
    try:
        return str(dnslib.DNSRecord.parse(message))
    except (dnslib.DNSError, ValueError, IndexError, struct.error) as exc:
        return f"<unparsable message: {exc}>"


def summary(
    message: bytes,
) -> tuple[int, int, list[tuple[str, int, int, str]], list[tuple[int, bytes]]]:
    """(flags, rcode, answers as (name, type, ttl, rdata text), EDNS options) for comparing."""
    record = dnslib.DNSRecord.parse(message)
    answers = [(str(rr.rname).lower(), rr.rtype, rr.ttl, str(rr.rdata)) for rr in record.rr]
    options: list[tuple[int, bytes]] = []
    rcode = record.header.rcode
    for rr in record.ar:
        if rr.rtype == packet.OPT:
            options.extend((opt.code, bytes(opt.data)) for opt in rr.rdata)
            rcode |= (rr.ttl >> 24) << 4
    return record.header.bitmap, rcode, answers, options


def read_reply(message: bytes) -> tuple[int, list[tuple[int, str]], list[int]]:
    """(rcode, answers as (type, rdata text), EDE codes) of a reply; PacketError if unreadable."""
    try:
        _, rcode, answers, options = summary(message)
    except (dnslib.DNSError, ValueError, IndexError, struct.error) as exc:
        raise packet.PacketError(f"cannot parse reply: {exc}", packet.FORMERR) from exc
    edes = [struct.unpack_from("!H", data)[0] for code, data in options if code == 15]
    return rcode, [(rtype, text) for _, rtype, _, text in answers], edes
