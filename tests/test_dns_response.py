"""response.parse_response against responses built here record by record, so what it must
find (counts without OPT, the records' bytes, where each TTL is, the cache TTL, whether any
record names another owner) is known from the construction; and every cut or misplaced OPT
is a ResponseError, never another exception."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.filter import packet
from agent.filter.answer_cache import targets_of
from agent.filter.response import ResponseError, Stored, matches, parse_response, unpack_meta

QNAME = "www.example.test"
QUESTION = packet.question_bytes(QNAME, packet.A, 1)
POINTER = b"\xc0\x0c"  # the question's name
OWNER = packet.encode_name("other.example.test")
TYPES = [packet.A, packet.AAAA, packet.CNAME, packet.DNAME, packet.TXT, packet.HTTPS, 15]


@dataclass(frozen=True)
class Record:
    owner: bytes
    rtype: int
    ttl: int
    rdata: bytes

    def wire(self) -> bytes:
        fixed = struct.pack("!HHIH", self.rtype, 1, self.ttl, len(self.rdata))
        return self.owner + fixed + self.rdata


def _rdata(rtype: int) -> bytes:
    if rtype == packet.A:
        return bytes([192, 0, 2, 1])
    if rtype == packet.AAAA:
        return bytes(16)
    if rtype in (packet.CNAME, packet.DNAME):
        return packet.encode_name("target.example.test")
    if rtype == packet.HTTPS:
        return b"\x00\x00" + packet.encode_name("alias.example.test")
    return b"\x04text"


RECORD = st.builds(
    lambda owner, rtype, ttl: Record(owner, rtype, ttl, _rdata(rtype)),
    st.sampled_from([POINTER, OWNER]),
    st.sampled_from(TYPES),
    st.integers(0, 2**31 - 1),
)


def soa(ttl: int, minimum: int) -> Record:
    rdata = POINTER + POINTER + struct.pack("!5I", 1, 2, 3, 4, minimum)
    return Record(b"\x00", packet.SOA, ttl, rdata)


def opt(extended_rcode: int = 0) -> Record:
    return Record(b"\x00", packet.OPT, extended_rcode << 24, b"")


def message(
    answers: list[Record],
    authority: list[Record],
    additional: list[Record],
    *,
    rcode: int = 0,
    flags: int = 0x8180,
    msg_id: int = 7,
) -> bytes:
    head = struct.pack(
        "!6H", msg_id, flags | rcode, 1, len(answers), len(authority), len(additional)
    )
    return head + QUESTION + b"".join(r.wire() for r in answers + authority + additional)


@settings(max_examples=300, deadline=None)
@given(
    answers=st.lists(RECORD, max_size=5),
    authority=st.lists(RECORD, max_size=2),
    additional=st.lists(RECORD, max_size=2),
    with_soa=st.booleans(),
    with_opt=st.booleans(),
    rcode=st.sampled_from([0, 3]),
    flags=st.sampled_from([0x8180, 0x8580, 0x81A0, 0x8380]),
)
def test_parse_response_reads_what_was_built(
    answers: list[Record],
    authority: list[Record],
    additional: list[Record],
    with_soa: bool,
    with_opt: bool,
    rcode: int,
    flags: int,
) -> None:
    soa_record = soa(900, 120)
    if with_soa:
        authority = [*authority, soa_record]
    tail = [opt()] if with_opt else []
    data = message(answers, authority, additional + tail, rcode=rcode, flags=flags)
    stored = parse_response(data, QUESTION)
    records = answers + authority + additional
    body = b"".join(r.wire() for r in records)
    assert stored.body == body
    assert stored.counts == (len(answers), len(authority), len(additional))
    assert stored.rcode == rcode
    assert stored.aa == bool(flags & 0x0400) and stored.ad == bool(flags & 0x0020)
    assert stored.truncated == bool(flags & 0x0200)
    assert unpack_meta(stored.meta) == (rcode, stored.aa, stored.ad, stored.counts)
    # Each TTL offset points at that record's TTL in the body, in record order.
    assert [ttl for _, ttl in stored.ttls()] == [r.ttl for r in records]
    assert len(stored.offsets) == 2 * len(records)
    for offset, ttl in stored.ttls():
        assert struct.unpack_from("!I", body, offset)[0] == ttl
    assert stored.linked == any(r.rtype in packet.TARGET_TYPES for r in records)
    if stored.truncated:
        want = 0
    elif rcode == packet.NXDOMAIN or not answers:
        want = min(soa_record.ttl, 120) if with_soa else 0
    else:
        want = min(r.ttl for r in records)
    assert stored.ttl == want


def test_an_answer_with_no_linking_record_has_no_targets() -> None:
    plain = parse_response(message([Record(POINTER, packet.A, 60, bytes(4))], [], []), QUESTION)
    assert not plain.linked and targets_of((QNAME, packet.A, 1, False), plain) == ()
    cname = Record(POINTER, packet.CNAME, 60, packet.encode_name("cdn.example.test"))
    linked = parse_response(message([cname], [], []), QUESTION)
    assert linked.linked
    assert targets_of((QNAME, packet.A, 1, False), linked) == ("cdn.example.test",)


def test_the_extended_rcode_comes_from_opt() -> None:
    data = message([], [], [opt(extended_rcode=1)], rcode=0)  # 1 << 4 | 0: BADVERS (16)
    stored = parse_response(data, QUESTION)
    assert stored.rcode == 16 and stored.ttl == 0 and stored.counts == (0, 0, 0)


@pytest.mark.parametrize(
    ("answers", "additional"),
    [
        ([opt()], []),  # OPT in the answer section
        ([], [opt(), opt()]),  # repeated
        ([], [opt(), Record(POINTER, packet.A, 5, bytes(4))]),  # not the last record
    ],
)
def test_misplaced_opt_is_refused(answers: list[Record], additional: list[Record]) -> None:
    with pytest.raises(ResponseError):
        parse_response(message(answers, [], additional), QUESTION)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=4), data=st.data())
def test_a_cut_response_is_a_response_error(records: list[Record], data: st.DataObject) -> None:
    whole = message(records, [], [])
    cut = data.draw(st.integers(12 + len(QUESTION), len(whole) - 1))
    with pytest.raises(ResponseError):
        parse_response(whole[:cut], QUESTION)


def test_matches_wants_our_id_a_response_and_our_question() -> None:
    data = message([], [], [], msg_id=0x1234)
    assert matches(data, 0x1234, QUESTION)
    assert matches(data, 0x1234, QUESTION.upper())  # case does not matter
    assert not matches(data, 0x1235, QUESTION)
    assert not matches(data[:2] + b"\x01\x00" + data[4:], 0x1234, QUESTION)  # a query
    other = packet.question_bytes("www.example.tesu", packet.A, 1)
    assert not matches(data, 0x1234, other)
    assert not matches(data[: 12 + len(QUESTION) - 1], 0x1234, QUESTION)


def test_stored_compares_by_value() -> None:
    one = parse_response(message([Record(POINTER, packet.A, 60, bytes(4))], [], []), QUESTION)
    two = parse_response(message([Record(POINTER, packet.A, 60, bytes(4))], [], []), QUESTION)
    assert one == two and isinstance(one, Stored)
    assert one != parse_response(message([], [], []), QUESTION)
    assert "rcode=0" in repr(one)
