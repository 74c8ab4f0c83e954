"""The fast path (packet.py) against the full path (dnscodec.py, dnslib): same parse, same
replies, over generated names, types and flags. Plus the small pure parts, table-driven."""

from __future__ import annotations

import struct
from datetime import datetime

import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.filter import dnscodec, packet
from agent.filter.answer_cache import AnswerCache
from agent.filter.resolvers.ratelimit import TokenBuckets
from agent.filter.response import parse_response, render
from agent.filter.schedule import ScheduleError, parse_schedule

LABEL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=20,
)
NAME = st.lists(LABEL, min_size=1, max_size=5).map(".".join)
QTYPE = st.sampled_from([1, 2, 5, 6, 15, 16, 28, 33, 64, 65, 255, 4242])


def _query(name: str, qtype: int, flags: int, msg_id: int, edns: int | None, do: bool) -> bytes:
    record = dnslib.DNSRecord(
        dnslib.DNSHeader(id=msg_id, bitmap=flags & 0x0130), q=dnslib.DNSQuestion(name, qtype)
    )
    if edns is not None:
        record.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else ""))
    return bytes(record.pack())


@settings(max_examples=300, deadline=None)
@given(
    name=NAME,
    qtype=QTYPE,
    flags=st.integers(0, 0xFFFF),
    msg_id=st.integers(0, 0xFFFF),
    edns=st.none() | st.integers(0, 65535),
    do=st.booleans(),
    rcode=st.sampled_from([0, 1, 2, 3, 4, 5, 16]),
    ede=st.none() | st.tuples(st.sampled_from([15, 17]), st.text(alphabet="abc :", max_size=20)),
)
def test_fast_and_full_paths_agree(
    name: str,
    qtype: int,
    flags: int,
    msg_id: int,
    edns: int | None,
    do: bool,
    rcode: int,
    ede: tuple[int, str] | None,
) -> None:
    data = _query(name, qtype, flags, msg_id, edns, do)
    fast = packet.parse_query(data)
    assert fast == dnscodec.parse_query(data)
    assert fast.qname == name.lower()
    assert dnscodec.summary(packet.error(fast, rcode, ede)) == dnscodec.summary(
        dnscodec.reference_reply(fast, rcode, ede=ede)
    )
    assert dnscodec.summary(packet.truncated(fast)) == dnscodec.summary(
        dnscodec.reference_reply(fast, 0, tc=True)
    )
    if qtype in (1, 28):
        rdata = bytes(4) if qtype == 1 else bytes(range(16))
        fast_reply = packet.answer(fast, (rdata,), 60, ede)
        full_reply = dnscodec.reference_reply(fast, 0, (rdata,), 60, ede)
        assert dnscodec.summary(fast_reply) == dnscodec.summary(full_reply)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=80))
def test_parsers_never_crash_and_agree_on_rejection(data: bytes) -> None:
    try:
        fast: packet.Query | str = packet.parse_query(data)
    except packet.Unusual:
        return
    except packet.PacketError as exc:
        fast = f"error {exc.rcode}"
    try:
        full: packet.Query | str = dnscodec.parse_query(data)
    except packet.PacketError as exc:
        full = f"error {exc.rcode}"
    if isinstance(fast, packet.Query) and isinstance(full, packet.Query):
        assert (fast.qname, fast.qtype, fast.edns) == (full.qname, full.qtype, full.edns)
    elif isinstance(fast, str) and fast.startswith("error None"):
        assert full == fast  # drops agree exactly


def test_compressed_question_goes_to_the_full_path() -> None:
    data = bytearray(_query("example.com", 1, 0x0100, 7, None, False))
    data[12:] = b"\xc0\x0c" + data[-4:]  # a pointer loop in the question
    with pytest.raises(packet.Unusual):
        packet.parse_query(bytes(data))
    with pytest.raises(packet.PacketError):
        dnscodec.parse_query(bytes(data))


def _upstream_reply(ttl: int) -> bytes:
    request = dnslib.DNSRecord.question("example.com")
    reply = request.reply()
    reply.add_answer(dnslib.RR("example.com", rdata=dnslib.A("192.0.2.9"), ttl=ttl))
    reply.add_ar(dnslib.EDNS0(udp_len=1232))
    return bytes(reply.pack())


def test_stored_answers_count_ttls_down() -> None:
    query = packet.parse_query(_query("Example.COM", 1, 0x0100, 99, None, False))
    stored = parse_response(_upstream_reply(300), packet.question_bytes("example.com", 1, 1))
    assert stored.ttl == 300 and stored.counts == (1, 0, 0)  # OPT removed
    now = [1000.0]
    cache = AnswerCache(2, 86400, clock=lambda: now[0])
    cache.put(("example.com", 1, 1, False), stored)
    now[0] += 100
    hit = cache.get(("example.com", 1, 1, False))
    assert hit is not None and hit[1] == 100
    reply = dnslib.DNSRecord.parse(render(hit[0], query, hit[1]))
    assert reply.header.id == 99 and reply.rr[0].ttl == 200 and str(reply.q.qname) == "Example.COM."
    now[0] += 201
    assert cache.get(("example.com", 1, 1, False)) is None
    for i in range(5):
        cache.put((f"n{i}", 1, 1, False), stored)
    assert len(cache) == 2


@pytest.mark.parametrize(
    ("text", "when", "active"),
    [
        ("mon-fri 08:00-16:00", datetime(2024, 1, 17, 10, 0), True),  # Wednesday
        ("mon-fri 08:00-16:00", datetime(2024, 1, 17, 16, 0), False),
        ("mon-fri 08:00-16:00", datetime(2024, 1, 20, 10, 0), False),  # Saturday
        ("sat,sun 10:00-12:00", datetime(2024, 1, 20, 11, 59), True),
        ("fri 22:00-06:00", datetime(2024, 1, 20, 5, 0), True),  # Friday night into Saturday
        ("fri 22:00-06:00", datetime(2024, 1, 21, 5, 0), False),
        ("daily 00:00-24:00", datetime(2024, 1, 21, 23, 59), True),
        ("mon 09:00-10:00; wed 09:00-10:00", datetime(2024, 1, 17, 9, 30), True),
    ],
)
def test_schedules(text: str, when: datetime, active: bool) -> None:
    assert parse_schedule(text).active(when) is active


@pytest.mark.parametrize(
    "text", ["mon-fri", "funday 08:00-09:00", "mon 25:00-26:00", "mon 08:00-08:00", ""]
)
def test_bad_schedules(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(text)


def test_token_bucket() -> None:
    now = [0.0]
    buckets = TokenBuckets(3, clock=lambda: now[0])
    assert [buckets.allow("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b")
    now[0] += 1 / 3
    assert buckets.allow("a") and not buckets.allow("a")


def test_header_only_error_keeps_id() -> None:
    reply = packet.header_error(0xBEEF, 0x0100, packet.FORMERR)
    msg_id, flags = struct.unpack_from("!HH", reply)
    assert msg_id == 0xBEEF and flags & 0x8000 and flags & 0xF == 1
