"""CNAME cloaking: an allowed name whose upstream answer leads (CNAME, DNAME, SVCB/HTTPS target) to
a name the client's group blocks gets the blocked answer, fresh or from the cache, per group,
counted and logged as a block of the target's category. Against the real server over UDP and
TCP with a real loopback upstream, plus the fast path held to the full chain."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.filter import packet
from agent.filter.querylog import QueryRecord
from agent.filter.verdict import Kind
from tests.dns_support import (
    Clock,
    FakeUpstream,
    RunningDns,
    ask,
    free_dns_port,
    running_dns,
    saturday,
    term_time,
    write_config,
)
from tests.test_dns_fastpath import Setup, full_answer, query_bytes
from tests.waiting import wait_until

PUPIL = "127.0.1.5"
STAFF = "127.0.2.5"
CLOAKED_ADDRESS = "192.0.2.7"

# What the cloaking upstream answers, by name or by a parent (so each test can ask a fresh
# name: "udp-1.cloaked.example" is answered as "cloaked.example"): (record type, target, ttl).
# Gambling and social networks (term time) are blocked for pupils only, adult for both groups,
# csam.example is statutory; pupils allow bbc.co.uk and lucky.casino.example.
CHAINS: dict[str, tuple[int, str, int]] = {
    "cloaked.example": (packet.CNAME, "www.casino.example", 300),
    "hop.example": (packet.CNAME, "mid.unlisted.example>adult.example", 300),
    "dname.example": (packet.DNAME, "bets.example", 300),
    "alias.example": (packet.HTTPS, "adult.example", 300),
    "service.example": (packet.SVCB, "www.adult.example", 300),
    "self.example": (packet.SVCB, "", 300),
    "social.cloak.example": (packet.CNAME, "social.example", 300),
    "zero.example": (packet.CNAME, "casino.example", 0),
    "later.example": (packet.CNAME, "newly.example", 300),
    "cdn.bbc.co.uk": (packet.CNAME, "casino.example", 300),
    "iwf.bbc.co.uk": (packet.CNAME, "csam.example", 300),
    "lucky.cloak.example": (packet.CNAME, "lucky.casino.example", 300),
}


def chain_reply(request: dnslib.DNSRecord) -> dnslib.DNSRecord | None:
    """The upstream's answer for a CHAINS name (None: not one), as a real resolver gives it:
    the chain's records, then the last owner's address for A."""
    qname = str(request.q.qname).rstrip(".").lower()
    zone = qname
    while zone not in CHAINS:
        if "." not in zone:
            return None
        zone = zone.split(".", 1)[1]
    rtype, target, ttl = CHAINS[zone]
    qtype = request.q.qtype
    reply = request.reply()
    if rtype in (packet.SVCB, packet.HTTPS):
        if qtype in (packet.SVCB, packet.HTTPS):  # AliasMode for HTTPS, ServiceMode for SVCB
            priority = 0 if rtype == packet.HTTPS else 1
            rdata = struct.pack("!H", priority) + packet.encode_name(target)
            reply.add_answer(dnslib.RR(qname, qtype, rdata=dnslib.RD(rdata), ttl=ttl))
        elif qtype == packet.A:
            reply.add_answer(dnslib.RR(qname, rdata=dnslib.A("192.0.2.1"), ttl=ttl))
        return reply
    owner = qname
    hops = target.split(">")
    if rtype == packet.DNAME:  # the zone's names are the target's: DNAME, then the CNAME made
        reply.add_answer(dnslib.RR(zone, packet.DNAME, rdata=dnslib.DNAME(target), ttl=ttl))
        hops = [qname[: -len(zone)] + target]
    for hop in hops:
        reply.add_answer(dnslib.RR(owner, packet.CNAME, rdata=dnslib.CNAME(hop), ttl=ttl))
        owner = hop
    if qtype == packet.A:
        reply.add_answer(dnslib.RR(owner, rdata=dnslib.A(CLOAKED_ADDRESS), ttl=ttl))
    return reply


class CloakingUpstream(FakeUpstream):
    """The fake upstream (real loopback UDP and TCP), answering CHAINS names with their chain."""

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        request = dnslib.DNSRecord.parse(data)
        reply = chain_reply(request)
        if reply is None:
            return super()._answer(data, transport)
        self.queries.append((str(request.q.qname).rstrip(".").lower(), request.q.qtype, transport))
        return bytes(reply.pack())


class Records:
    """A query-record sink that keeps everything."""

    def __init__(self) -> None:
        self.items: list[QueryRecord] = []

    def offer(self, record: QueryRecord) -> None:
        self.items.append(record)

    def count(self, qname: str) -> int:
        return sum(1 for r in self.items if r.qname == qname)

    def last(self, qname: str) -> QueryRecord:
        return [r for r in self.items if r.qname == qname][-1]


class Served:
    """The running server and what it was started with."""

    def __init__(
        self, dns: RunningDns, upstream: FakeUpstream, records: Records, clock: Clock, path: Path
    ):
        self.dns, self.upstream, self.records, self.clock, self.path = (
            dns, upstream, records, clock, path
        )  # fmt: skip

    def blocked_count(self, group: str, category: str) -> float:
        labels = {"verdict": "blocked", "category": category, "group": group}
        metrics = self.dns.service.metrics
        assert metrics is not None
        return metrics.value("hedgerow_dns_queries_total", labels)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    records = Records()
    clock = Clock(term_time())
    with CloakingUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path_factory.mktemp("cloak"), [upstream.address], port)
        with running_dns(path, clock, (records,)) as dns:
            yield Served(dns, upstream, records, clock, path)


@pytest.fixture
def server(served: Served) -> Iterator[Served]:
    served.clock.now = term_time()
    yield served
    served.clock.now = term_time()


def addresses(reply: dnslib.DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype in (packet.A, packet.AAAA)]


def edes(reply: dnslib.DNSRecord) -> list[int]:
    return [
        int.from_bytes(bytes(opt.data)[:2], "big")
        for rr in reply.ar
        if rr.rtype == packet.OPT
        for opt in rr.rdata
        if opt.code == packet.EDE_OPTION
    ]


def query(
    server: Served, name: str, source: str, qtype: str = "A", tcp: bool = False
) -> dnslib.DNSRecord:
    """Ask, and wait for the answer's query record (written just after the reply is sent)."""
    records = server.records.count(name)
    reply = ask(server.dns.port, name, qtype, source, edns=1232, tcp=tcp)
    wait_until(lambda: server.records.count(name) > records, what=f"the record of {name}")
    return reply


def assert_blocked(reply: dnslib.DNSRecord, qtype: str = "A") -> None:
    assert reply.header.rcode == dnslib.RCODE.NOERROR
    assert addresses(reply) == (["0.0.0.0"] if qtype == "A" else [])
    assert [rr.rtype for rr in reply.rr] == ([packet.A] if qtype == "A" else [])  # no chain
    assert edes(reply) == [packet.EDE_BLOCKED]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("first", [PUPIL, STAFF], ids=["pupil-first", "staff-first"])
def test_a_cname_to_a_blocked_name_is_blocked_for_that_group_only(
    server: Served, tcp: bool, first: str
) -> None:
    # One upstream answer, cached once, serves both groups: pupils (who block gambling) get the
    # blocked answer, fresh and from the cache; staff get the address, whoever asked first.
    name = f"{'tcp' if tcp else 'udp'}-{first[-3]}.cloaked.example"
    before = server.blocked_count("pupils", "gambling")
    second = STAFF if first == PUPIL else PUPIL
    for source in (first, second, first, second):
        reply = query(server, name, source, tcp=tcp)
        if source == PUPIL:
            assert_blocked(reply)
            record = server.records.last(name)
            assert (record.verdict, record.category, record.group) == (
                "blocked",
                "gambling",
                "pupils",
            )
            assert record.rule is not None and record.rule.endswith(" via www.casino.example")
        else:
            assert addresses(reply) == [CLOAKED_ADDRESS]
            assert str(reply.rr[0].rdata) == "www.casino.example."
            assert server.records.last(name).verdict in ("resolved", "cached")
    assert server.upstream.count(name) == 1
    assert server.blocked_count("pupils", "gambling") == before + 2


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("name", "qtype", "source", "category"),
    [
        ("hop.example", "A", STAFF, "adult"),  # the second CNAME of a chain
        ("www.dname.example", "A", PUPIL, "gambling"),  # DNAME bets.example, CNAME www.bets...
        ("alias.example", "HTTPS", STAFF, "adult"),  # HTTPS AliasMode target
        ("service.example", "SVCB", STAFF, "adult"),  # SVCB ServiceMode TargetName
        ("iwf.bbc.co.uk", "A", PUPIL, "iwf"),  # statutory beats the pupils' allow entry
        ("iwf.bbc.co.uk", "A", STAFF, "iwf"),
    ],
)
def test_every_kind_of_target_is_checked(
    server: Served, tcp: bool, name: str, qtype: str, source: str, category: str
) -> None:
    name = f"{'tcp' if tcp else 'udp'}.{name}"
    for _ in range(2):  # fresh, then from the cache
        assert_blocked(query(server, name, source, qtype, tcp=tcp), qtype)
        assert server.records.last(name).category == category
    assert server.upstream.count(name) == 1


@pytest.mark.parametrize(
    ("name", "qtype", "source", "want"),
    [
        ("self.example", "SVCB", STAFF, 1),  # TargetName "." is the owner itself
        ("cdn.bbc.co.uk", "A", PUPIL, 2),  # allowlisted question: the school vouched for it
        ("lucky.cloak.example", "A", PUPIL, 2),  # the target is on the pupils' allowlist
        ("hop.example", "A", PUPIL, 0),  # ... but adult is blocked for pupils as well
    ],
)
def test_what_the_policy_allows_passes(
    server: Served, name: str, qtype: str, source: str, want: int
) -> None:
    name = "pass." + name
    for _ in range(2):
        reply = query(server, name, source, qtype)
        if want:
            assert len(reply.rr) == want and not edes(reply)
        else:
            assert_blocked(reply)


def test_an_uncacheable_answer_is_checked_every_time(server: Served) -> None:
    for _ in range(2):
        assert_blocked(query(server, "x.zero.example", PUPIL))
    assert server.upstream.count("x.zero.example") == 2


def test_a_cached_answer_is_checked_against_the_schedule_now(server: Served) -> None:
    # Social networks are blocked for pupils in term time only: the answer cached on Saturday
    # is the blocked answer on Wednesday, without asking upstream again.
    server.clock.now = saturday()
    assert addresses(query(server, "x.social.cloak.example", PUPIL)) == [CLOAKED_ADDRESS]
    server.clock.now = term_time()
    assert_blocked(query(server, "x.social.cloak.example", PUPIL))
    server.clock.now = saturday()
    assert addresses(query(server, "x.social.cloak.example", PUPIL)) == [CLOAKED_ADDRESS]
    assert server.upstream.count("x.social.cloak.example") == 1


def test_a_cached_answer_whose_target_is_newly_listed_is_blocked_after_reload(
    server: Served,
) -> None:
    name = "x.later.example"
    assert addresses(query(server, name, PUPIL)) == [CLOAKED_ADDRESS]
    gambling = server.path.parent / "lists" / "gambling.txt"
    original = gambling.read_text()
    try:
        gambling.write_text(original + "newly.example\n")
        assert server.dns.call(server.dns.service.reload) is True
        for source in (PUPIL, PUPIL):
            assert_blocked(query(server, name, source))
        assert addresses(query(server, name, STAFF)) == [CLOAKED_ADDRESS]
        assert server.upstream.count(name) == 1  # the cache kept it; the new lists judged it
    finally:
        gambling.write_text(original)
        assert server.dns.call(server.dns.service.reload) is True


# The fast path and the full chain on cached cloaked answers (tests/test_dns_fastpath.py draws
# the same names at random; this pins the verdicts): (name, qtype, client, weekend) -> (kind,
# category, the target the rule names).
FAST_CASES = [
    ("cloaked.example", packet.A, PUPIL, False, Kind.BLOCKED, "gambling", "www.casino.example"),
    ("cloaked.example", packet.AAAA, PUPIL, True, Kind.BLOCKED, "gambling", "www.casino.example"),
    ("cloaked.example", packet.A, STAFF, False, Kind.CACHED, None, None),
    ("social.cloaked.example", packet.A, PUPIL, False, Kind.BLOCKED, "social_networks", "social.example"),
    ("social.cloaked.example", packet.A, PUPIL, True, Kind.CACHED, None, None),
    ("lucky.cloaked.example", packet.A, PUPIL, False, Kind.CACHED, None, None),
    ("cdn.bbc.co.uk", packet.A, PUPIL, False, Kind.CACHED, None, None),
    ("iwf.bbc.co.uk", packet.A, PUPIL, False, Kind.BLOCKED, "iwf", "a.csam.example"),
    ("iwf.bbc.co.uk", packet.TXT, STAFF, False, Kind.BLOCKED, "iwf", "a.csam.example"),
    ("www.dname.cloaked.example", packet.A, PUPIL, False, Kind.BLOCKED, "gambling", "www.bets.example"),
    ("alias.cloaked.example", packet.HTTPS, STAFF, False, Kind.BLOCKED, "adult", "adult.example"),
    ("service.cloaked.example", packet.SVCB, STAFF, False, Kind.BLOCKED, "iwf", "csam.example"),
    ("root.cloaked.example", packet.SVCB, STAFF, False, Kind.CACHED, None, None),
    ("plain.cloaked.example", packet.A, PUPIL, False, Kind.CACHED, None, None),
]  # fmt: skip


@pytest.fixture(scope="module")
def fast_setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("fastcloak"))


@pytest.mark.parametrize("edns", [None, 1232])
@pytest.mark.parametrize(
    ("name", "qtype", "client", "weekend", "kind", "category", "target"), FAST_CASES
)
def test_the_fast_path_blocks_cached_cloaked_answers_like_the_full_chain(
    fast_setup: Setup,
    edns: int | None,
    name: str,
    qtype: int,
    client: str,
    weekend: bool,
    kind: Kind,
    category: str | None,
    target: str | None,
) -> None:
    fast_setup.policy_clock.now = saturday() if weekend else term_time()
    chain = fast_setup.chain()
    data = query_bytes(name, qtype, 4242, 0x0100, edns, False, 0b1010)
    for _ in range(2):  # the second from the memos
        fast = chain.resolve_fast(data, client)
        full = full_answer(chain, data, client)
        assert isinstance(fast, tuple) and full is not None
        assert fast[0] == full.wire and fast[1] == full.verdict
        assert (fast[1].kind, fast[1].category) == (kind, category)
        if target is not None:
            assert fast[1].rule is not None and fast[1].rule.endswith(f" via {target}")


# packet.answer_targets: table-driven, then a property with an oracle.
def _message(qname: str, records: list[dnslib.RR]) -> tuple[bytes, int]:
    reply = dnslib.DNSRecord.question(qname).reply()
    for record in records:
        reply.add_answer(record)
    wire = bytes(reply.pack())
    question = packet.question_bytes(qname, packet.A, 1)
    return wire[12 + len(question) :], len(records)


def _cname(owner: str, target: str) -> dnslib.RR:
    return dnslib.RR(owner, packet.CNAME, rdata=dnslib.CNAME(target), ttl=60)


def test_targets_of_answers() -> None:
    q = "www.example.org"
    cases: list[tuple[list[dnslib.RR], tuple[str, ...]]] = [
        ([dnslib.RR(q, rdata=dnslib.A("192.0.2.1"))], ()),
        ([_cname(q, "A.Example.NET"), _cname("a.example.net", "b.example.net")],
         ("a.example.net", "b.example.net")),
        ([_cname(q, "sub." + q)], ("sub.www.example.org",)),  # compressed against the question
        ([_cname(q, q)], ()),  # the question itself is judged already
        ([_cname(q, "x.example"), _cname("y.example", "x.example")], ("x.example",)),
        ([dnslib.RR(q, packet.HTTPS, rdata=dnslib.RD(b"\x00\x00\x00"))], ()),  # "." : no target
        ([dnslib.RR(q, packet.HTTPS, rdata=dnslib.RD(b"\x00\x01\x00\x00\x01\x00\x00"))], ()),
        ([dnslib.RR(q, packet.HTTPS, rdata=dnslib.RD(b"\x00"))], ()),  # too short to hold one
    ]  # fmt: skip
    for records, want in cases:
        body, count = _message(q, records)
        assert packet.answer_targets(q, packet.A, 1, body, count) == want, records


def test_broken_target_names_are_skipped_not_fatal() -> None:
    q = "www.example.org"
    question = packet.question_bytes(q, packet.A, 1)
    base = 12 + len(question)
    loop = struct.pack("!H", 0xC000 | base + 12)  # the CNAME's rdata points at itself
    rdata_records = [
        b"\xc0\x0c" + struct.pack("!HHIH", packet.CNAME, 1, 60, 2) + loop,
        b"\xc0\x0c" + struct.pack("!HHIH", packet.CNAME, 1, 60, 2) + b"\x7f\x01",  # bad label
        b"\xc0\x0c" + struct.pack("!HHIH", packet.CNAME, 1, 60, 3) + b"\x05ab\x00",  # past end
    ]
    for record in rdata_records:
        assert packet.answer_targets(q, packet.A, 1, record, 1) == ()
    assert packet.answer_targets(q, packet.A, 1, rdata_records[0][:7], 1) == ()  # cut short


def test_an_answer_with_thousands_of_targets_is_read_only_so_far() -> None:
    q = "www.example.org"
    records = [_cname(f"h{i}.example", f"h{i + 1}.example") for i in range(2000)]
    body, count = _message(q, records)
    found = packet.answer_targets(q, packet.A, 1, body, count)
    assert found == tuple(f"h{i + 1}.example" for i in range(packet.MAX_TARGETS))


_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_NAME = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)


@given(chain=st.lists(_NAME, min_size=0, max_size=6), https=st.none() | _NAME)
def test_targets_are_every_name_the_chain_leads_to(chain: list[str], https: str | None) -> None:
    q = "question.example"
    records = []
    owner = q
    for hop in chain:
        records.append(_cname(owner, hop))
        owner = hop
    if https is not None:
        rdata = b"\x00\x01" + packet.encode_name(https) + b"\x00\x01\x00\x02\x02h2"
        records.append(dnslib.RR(owner, packet.HTTPS, rdata=dnslib.RD(rdata), ttl=60))
    records.append(dnslib.RR(owner, rdata=dnslib.A("192.0.2.1"), ttl=60))
    body, count = _message(q, records)
    want = list(dict.fromkeys([*chain, *([https] if https else [])]))
    assert packet.answer_targets(q, packet.A, 1, body, count) == tuple(n for n in want if n != q)


@given(body=st.binary(max_size=80), count=st.integers(0, 5))
def test_any_bytes_give_names_or_nothing(body: bytes, count: int) -> None:
    for name in packet.answer_targets("q.example", packet.A, 1, body, count):
        assert name and name != "q.example"
