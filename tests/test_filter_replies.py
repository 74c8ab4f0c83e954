"""agent/filter/replies.py: the laptop agent's own reading of replies agrees with dnslib."""

from __future__ import annotations

import contextlib

import dnslib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.filter import packet, replies

_NAMES = st.sampled_from(["a.example", "x.y.example", "beacon.hedgerow.internal", "b.example"])
_RECORDS = st.one_of(
    st.tuples(st.just("A"), st.ip_addresses(v=4).map(str)),
    st.tuples(st.just("AAAA"), st.ip_addresses(v=6).map(str)),
    st.tuples(st.just("CNAME"), _NAMES),
    st.tuples(st.just("TXT"), st.lists(st.binary(max_size=255), min_size=1, max_size=3)),
)


def _reply(qname: str, records: list[tuple[str, object]], rcode: int) -> bytes:
    reply = dnslib.DNSRecord(
        dnslib.DNSHeader(id=7, qr=1, rcode=rcode), q=dnslib.DNSQuestion(qname, dnslib.QTYPE.A)
    )
    for kind, value in records:
        rdata: dnslib.RD
        if kind == "A":
            rdata = dnslib.A(value)
        elif kind == "AAAA":
            rdata = dnslib.AAAA(value)
        elif kind == "CNAME":
            rdata = dnslib.CNAME(value)
        else:
            assert isinstance(value, list)
            rdata = dnslib.TXT(value)
        reply.add_answer(dnslib.RR(qname, getattr(dnslib.QTYPE, kind), rdata=rdata, ttl=60))
    return bytes(reply.pack())


@given(_NAMES, st.lists(_RECORDS, max_size=6), st.integers(0, 5))
def test_answers_agree_with_dnslib(
    qname: str, records: list[tuple[str, object]], rcode: int
) -> None:
    message = _reply(qname, records, rcode)
    parsed = dnslib.DNSRecord.parse(message)
    got_rcode, got = replies.answers(message)
    assert got_rcode == parsed.header.rcode == rcode
    assert [rtype for rtype, _ in got] == [rr.rtype for rr in parsed.rr]
    assert replies.a_answers(message) == (
        rcode,
        [str(rr.rdata) for rr in parsed.rr if rr.rtype == packet.A],
    )
    assert replies.txt_answers(message) == (
        rcode,
        tuple(b"".join(rr.rdata.data) for rr in parsed.rr if rr.rtype == packet.TXT),
    )


@given(st.binary(max_size=300), st.integers(0, 300))
def test_broken_replies_raise_only_packet_error(junk: bytes, cut: int) -> None:
    valid = _reply("a.example", [("A", "192.0.2.1"), ("TXT", [b"hi"])], 0)
    for data in (junk, valid[:cut], valid[:cut] + junk):
        for read in (replies.answers, replies.a_answers, replies.txt_answers):
            with contextlib.suppress(packet.PacketError):
                read(data)


def test_a_record_of_the_wrong_length_is_unreadable() -> None:
    valid = _reply("a.example", [("A", "192.0.2.1")], 0)
    # rdlength 4 -> 3, and drop the last byte: the record is well-formed but not an address
    broken = valid[:-6] + b"\x00\x03" + valid[-4:-1]
    with pytest.raises(packet.PacketError, match="A record of 3 bytes"):
        replies.a_answers(broken)


def test_truncated_reply_names_what_ran_out() -> None:
    valid = _reply("a.example", [("TXT", [b"hello"])], 0)
    with pytest.raises(packet.PacketError, match="past"):
        replies.txt_answers(valid[:-2])
    with pytest.raises(packet.PacketError, match="shorter than a header"):
        replies.answers(valid[:5])
