"""The fast path (agent/filter/fastpath.py) against the full chain: for generated queries, clients,
times and cache ages, whenever the fast path answers, its reply is byte-identical to the full
chain's and its verdict equal. Plus: it does answer the common cases, and rate limiting spends
one token per query whichever path answers."""

from __future__ import annotations

import struct
from pathlib import Path

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dns.service import load_all
from agent.filter import packet
from agent.filter.answer_cache import AnswerCache, targets_of
from agent.filter.chain import Chain, build_chain
from agent.filter.fastpath import Miss
from agent.filter.request import Pending, Request
from agent.filter.resolvers.forward import Forwarder
from agent.filter.resolvers.ratelimit import TokenBuckets
from agent.filter.response import Stored, parse_response
from agent.filter.upstreams import Upstreams
from agent.filter.verdict import Answer, Kind
from tests.dns_support import Clock, free_dns_port, saturday, term_time, write_config

NAMES = [
    "casino.example", "www.casino.example", "lucky.casino.example", "x.bets.example",
    "bets.example", "adult.example", "www.adult.example", "social.example",
    "ok.social.example", "csam.example", "a.csam.example", "bbc.co.uk", "www.bbc.co.uk",
    "cached.example", "www.cached.example", "nx.cached.example", "unlisted.example",
    "www.google.com", "www.youtube.com", "use-application-dns.net", "_dns.resolver.arpa",
    "x.beacon.hedgerow.internal", "",
]  # fmt: skip
CACHED = ["cached.example", "www.cached.example", "nx.cached.example", "www.bbc.co.uk"]
# Cached answers that lead to other names (CNAME cloaking): name -> (record type, target).
# Gambling and social networks (in term time) are blocked for pupils only, adult for both
# groups, csam.example is statutory; bbc.co.uk and lucky.casino.example are pupils' allow
# entries. SVCB/HTTPS records answer the HTTPS and SVCB questions, CNAME/DNAME every type.
CLOAKS = {
    "cloaked.example": (packet.CNAME, "www.casino.example"),
    "social.cloaked.example": (packet.CNAME, "social.example"),
    "lucky.cloaked.example": (packet.CNAME, "lucky.casino.example"),
    "cdn.bbc.co.uk": (packet.CNAME, "casino.example"),
    "iwf.bbc.co.uk": (packet.CNAME, "a.csam.example"),
    "www.dname.cloaked.example": (packet.DNAME, "bets.example"),
    "alias.cloaked.example": (packet.HTTPS, "adult.example"),
    "service.cloaked.example": (packet.SVCB, "csam.example"),
    "root.cloaked.example": (packet.SVCB, ""),
    "plain.cloaked.example": (packet.CNAME, "cdn.unlisted.example"),
}
NAMES += list(CLOAKS)
CLIENTS = ["127.0.1.5", "127.0.2.5", "127.0.9.9", "127.200.0.1", "::1"]
QTYPES = [packet.A, packet.AAAA, packet.TXT, packet.HTTPS, packet.SVCB, 15]


class Setup:
    """A chain built from the test config, a cache clock and a policy clock."""

    def __init__(self, directory: Path, rate: int = 0, extra: str = "") -> None:
        path = write_config(directory, ["127.0.0.1:9"], free_dns_port(), rate=rate, extra=extra)
        self.loaded = load_all(path)
        self.policy_clock = Clock(term_time())
        self.cache_clock = Clock(1000.0)
        self.cache = AnswerCache(1000, 86400, clock=self.cache_clock)
        self.forwarder = Forwarder(self.cache, Upstreams(self.loaded.config.upstream))
        for name in CACHED:
            for qtype in (packet.A, packet.AAAA, packet.TXT, 15):
                for do in (False, True):
                    self.cache.put((name, qtype, 1, do), _stored(name, qtype))
        for name in CLOAKS:
            for qtype in (packet.A, packet.AAAA, packet.TXT, packet.HTTPS, packet.SVCB):
                for do in (False, True):
                    self.cache.put((name, qtype, 1, do), cloaked_stored(name, qtype))

    def chain(self, buckets: TokenBuckets | None = None) -> Chain:
        return build_chain(
            self.loaded.config.spec,
            self.loaded.index,
            self.forwarder,
            clock=self.policy_clock,
            buckets=buckets,
        )


def _stored(name: str, qtype: int) -> Stored:
    request = dnslib.DNSRecord.question(name, dnslib.QTYPE.get(qtype))
    reply = request.reply()
    if name.startswith("nx"):
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        soa = dnslib.SOA("ns.example.", "h.example.", (1, 3600, 600, 86400, 300))
        reply.add_auth(dnslib.RR("example.", dnslib.QTYPE.SOA, rdata=soa, ttl=300))
    elif qtype == packet.A:
        reply.header.ad = 1
        reply.add_answer(dnslib.RR(name, rdata=dnslib.A("192.0.2.1"), ttl=300))
        reply.add_answer(dnslib.RR(name, rdata=dnslib.A("192.0.2.2"), ttl=200))
    elif qtype == packet.TXT:
        for i in range(12):  # big enough to need TC for some clients
            reply.add_answer(dnslib.RR(name, qtype, rdata=dnslib.TXT("t" * 60 + str(i)), ttl=300))
    else:
        reply.header.aa = 1
        reply.add_auth(
            dnslib.RR("example.", dnslib.QTYPE.SOA, rdata=dnslib.SOA("a.", "b.", (1,) * 5), ttl=50)
        )
    return parse_response(reply.pack(), packet.question_bytes(name, qtype, 1))


def cloaked_stored(name: str, qtype: int) -> Stored:
    """An upstream answer to `name` that leads to its CLOAKS target, as dnslib packs it
    (compressed CNAME and DNAME targets; SVCB TargetName uncompressed, RFC 9460)."""
    rtype, target = CLOAKS[name]
    reply = dnslib.DNSRecord.question(name, dnslib.QTYPE.get(qtype)).reply()
    if rtype in (packet.SVCB, packet.HTTPS):
        if qtype in (packet.SVCB, packet.HTTPS):
            priority = 0 if rtype == packet.HTTPS else 1
            rdata = struct.pack("!H", priority) + packet.encode_name(target)
            reply.add_answer(dnslib.RR(name, qtype, rdata=dnslib.RD(rdata), ttl=300))
    else:
        if rtype == packet.DNAME:
            zone = name.split(".", 1)[1]
            reply.add_answer(dnslib.RR(zone, rtype, rdata=dnslib.DNAME(target), ttl=300))
            target = name.split(".", 1)[0] + "." + target
        reply.add_answer(dnslib.RR(name, packet.CNAME, rdata=dnslib.CNAME(target), ttl=300))
        if qtype == packet.A:
            reply.add_answer(dnslib.RR(target, rdata=dnslib.A("192.0.2.7"), ttl=300))
    return parse_response(reply.pack(), packet.question_bytes(name, qtype, 1))


def query_bytes(
    name: str, qtype: int, msg_id: int, flags: int, edns: int | None, do: bool, case: int
) -> bytes:
    """A query with the name's letters upper-cased by the bits of `case` (0x20 style)."""
    cased = "".join(c.upper() if case >> (i % 30) & 1 else c for i, c in enumerate(name))
    head = struct.pack("!6H", msg_id, flags & 0x0130, 1, 0, 0, 0 if edns is None else 1)
    opt = b""
    if edns is not None:
        opt = b"\x00" + struct.pack("!HHIH", packet.OPT, edns, 0x8000 if do else 0, 0)
    return head + packet.question_bytes(cased, qtype, 1) + opt


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("fast"))


@pytest.fixture
def setup(built: Setup) -> Setup:
    """The module's Setup (built once: loading the lists is the slow part) with its clocks back
    at a term-time Wednesday and a fresh cache age, whatever a test before moved them to."""
    built.policy_clock.now = term_time()
    built.cache_clock.now = 1000.0
    return built


def full_answer(chain: Chain, data: bytes, client: str) -> Answer | None:
    q = packet.parse_query(data)
    outcome = chain.resolve(Request(q, client, "udp", chain.clock()))
    return outcome if isinstance(outcome, Answer) else None


def compare(
    setup: Setup,
    name: str,
    qtype: int,
    msg_id: int,
    flags: int,
    edns: int | None,
    do: bool,
    case: int,
    client: str,
    weekend: bool,
    age: int,
    repeat: bool,
) -> Kind | None:
    """Ask the fast path and the full chain the same query; fail unless the fast path's answer,
    if it gives one, is the full chain's. Returns the kind of the fast path's verdict (None if it
    left the query to the full chain)."""
    setup.policy_clock.now = saturday() if weekend else term_time()
    setup.cache_clock.now = 1000.0 + age
    chain = setup.chain()
    data = query_bytes(name, qtype, msg_id, flags, edns, do, case)
    seen = None
    for _ in range(2 if repeat else 1):  # the second time comes from the parse memo
        fast = chain.resolve_fast(data, client)
        full = full_answer(chain, data, client)
        if isinstance(fast, Miss):
            seen = compare_fetched(chain, fast, data, client, name, qtype, edns, do)
            continue
        if isinstance(fast, tuple):
            assert full is not None, (name, client)
            limit = 512 if edns is None else max(512, min(edns, 1232))
            assert len(fast[0]) <= limit
            assert fast[0] == full.wire, (name, qtype, client)
            assert fast[1] == full.verdict
            assert fast[2] in (None, name)
            assert fast[3] == qtype
            seen = fast[1].kind
    # The common cases must not fall through to the full chain.
    if isinstance(full, Answer) and full.verdict.kind in (Kind.BLOCKED, Kind.REFUSED):
        assert isinstance(chain.resolve_fast(data, client), tuple), full.verdict
    if isinstance(full, Answer) and full.verdict.kind == Kind.CACHED and len(full.wire) <= 512:
        assert isinstance(chain.resolve_fast(data, client), tuple), full.verdict
    return seen


def compare_fetched(
    chain: Chain,
    miss: Miss,
    data: bytes,
    client: str,
    name: str,
    qtype: int,
    edns: int | None,
    do: bool,
) -> Kind:
    """A miss (the full chain would ask upstream too), then its upstream answer given to the fast
    path's fetched() and to the full chain's Chain.answer_fetched: the same reply and verdict,
    RESOLVED unless a target is blocked; too big for the client only where the full chain's
    reply is (the server then sends the full chain's TC)."""
    q = packet.parse_query(data)
    outcome = chain.resolve(Request(q, client, "udp", chain.clock()))
    assert isinstance(outcome, Pending), (name, qtype, client)  # the full chain misses too
    assert miss.key == (name, qtype, 1, do and edns is not None)
    assert miss.question(data) == packet.question_bytes(name, qtype, 1)
    stored = cloaked_stored(name, qtype) if name in CLOAKS else _stored(name, qtype)
    targets = targets_of(miss.key, stored)
    fast = chain.fast.fetched(miss, data, stored, targets)
    full = chain.answer_fetched(Request(q, client, "udp", chain.clock()), stored, targets)
    assert isinstance(full, Answer)
    limit = 512 if edns is None else max(512, min(edns, 1232))
    if fast is None:
        assert len(full.wire) > limit, (name, qtype, client)
        return full.verdict.kind
    assert (fast[0], fast[1]) == (full.wire, full.verdict), (name, qtype, client)
    assert fast[1].kind in (Kind.RESOLVED, Kind.BLOCKED) and len(fast[0]) <= limit
    assert (fast[2], fast[3]) == (name, qtype)
    return fast[1].kind


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(NAMES),
    qtype=st.sampled_from(QTYPES),
    msg_id=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF),
    edns=st.none() | st.sampled_from([512, 1232, 4096, 600]),
    do=st.booleans(),
    case=st.integers(0, 2**30),
    client=st.sampled_from(CLIENTS),
    weekend=st.booleans(),
    age=st.integers(0, 400),
    repeat=st.booleans(),
)
def test_fast_path_answers_like_the_full_chain(
    setup: Setup,
    name: str,
    qtype: int,
    msg_id: int,
    flags: int,
    edns: int | None,
    do: bool,
    case: int,
    client: str,
    weekend: bool,
    age: int,
    repeat: bool,
) -> None:
    compare(setup, name, qtype, msg_id, flags, edns, do, case, client, weekend, age, repeat)


def test_the_comparison_covers_every_fast_verdict(setup: Setup) -> None:
    # The property above compares whatever the fast path answers; this shows, on its own and in
    # any order, that the inputs it draws from reach every kind of answer the fast path gives.
    seen = {
        compare(setup, name, qtype, 7, 0x0100, edns, False, 0, client, weekend, 0, False)
        for name in NAMES
        for qtype in QTYPES
        for client in CLIENTS
        for weekend in (False, True)
        for edns in (None, 1232)
    }
    assert {Kind.BLOCKED, Kind.REFUSED, Kind.CACHED, Kind.FILTERED, Kind.RESOLVED} <= seen


@pytest.mark.parametrize("fast_first", [True, False])
def test_rate_limit_spends_one_token_per_query_on_either_path(
    tmp_path: Path, fast_first: bool
) -> None:
    setup = Setup(tmp_path, rate=3)
    now = [0.0]
    chain = setup.chain(TokenBuckets(3, clock=lambda: now[0]))
    blocked = query_bytes("casino.example", 1, 1, 0x0100, None, False, 0)
    miss = query_bytes("miss.example", 1, 2, 0x0100, None, False, 0)  # the full chain answers
    codes = []
    for data in [blocked, miss] * 3 if fast_first else [miss, blocked] * 3:
        fast = chain.resolve_fast(data, "127.0.1.5")
        if isinstance(fast, tuple):
            codes.append(fast[0][3] & 0xF)
            continue
        q = packet.parse_query(data)
        request = Request(q, "127.0.1.5", "udp", 0.0)
        request.metered = fast is not False  # True or a Miss: the token is spent
        outcome = chain.resolve(request)
        codes.append(outcome.wire[3] & 0xF if isinstance(outcome, Answer) else 0)
    assert codes == [0, 0, 0, 5, 5, 5]  # three tokens, then REFUSED on both paths


def test_fast_path_refuses_to_compile_an_unknown_link(setup: Setup) -> None:
    from agent.filter.fastpath import FastPath

    class Odd:
        name = "odd"

        def resolve(self, request: Request) -> None:
            return None

    chain = setup.chain()
    with pytest.raises(TypeError, match="odd"):
        FastPath([*chain.links[:1], Odd()], [], max_udp_size=1232, clock=setup.policy_clock)


def test_unusual_packets_go_to_the_full_path(setup: Setup) -> None:
    chain = setup.chain()
    good = query_bytes("casino.example", 1, 7, 0x0100, None, False, 0)
    compressed = good[:12] + b"\xc0\x0c" + good[-4:]
    chaos = good[:-2] + b"\x00\x03"
    badvers = query_bytes("casino.example", 1, 7, 0x0100, 1232, False, 0)
    badvers = badvers[:-5] + b"\x01" + badvers[-4:]  # EDNS version 1
    for data in (compressed, chaos, badvers, good[:11], good + b"x", good[:-1]):
        assert chain.resolve_fast(data, "127.0.1.5") is False


# Label bytes: letters in both cases, digits, what the fast path accepts besides, and bytes it
# must hand to the full parser (a dot inside a label, a space, a control byte, a non-ASCII one).
LABEL_BYTES = b"aBcsinoxmpleZ019-_*/. \x05\xe9"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    labels=st.lists(
        st.binary(min_size=1, max_size=8).map(
            lambda raw: bytes(LABEL_BYTES[b % len(LABEL_BYTES)] for b in raw)
        ),
        max_size=4,
    ),
    tail=st.sampled_from([b"", b"\x07example", b"\x06casino\x07example"]),
    qtype=st.sampled_from(QTYPES),
)
def test_any_label_bytes_answer_like_the_full_chain(
    setup: Setup, labels: list[bytes], tail: bytes, qtype: int
) -> None:
    # Every byte a label may hold: the fast path answers exactly as the full chain, or declines.
    name = b"".join(bytes([len(label)]) + label for label in labels) + tail
    data = struct.pack("!6H", 9, 0x0100, 1, 0, 0, 0) + name + b"\x00" + struct.pack("!HH", qtype, 1)
    chain = setup.chain()
    for _ in range(2):  # the second time comes from the name memo
        fast = chain.resolve_fast(data, "127.0.1.5")
        if not isinstance(fast, tuple):
            continue
        full = full_answer(chain, data, "127.0.1.5")
        assert full is not None
        assert fast[0] == full.wire and fast[1] == full.verdict
        assert fast[2] == packet.parse_query(data).qname


def test_a_full_cache_evicts_the_oldest_in_batches() -> None:
    from agent.filter.answer_cache import EVICT_FRACTION

    cache = AnswerCache(EVICT_FRACTION * 4, 86400, clock=lambda: 0.0)
    stored = _stored("cached.example", packet.A)
    for i in range(EVICT_FRACTION * 4 + 1):
        cache.put((f"n{i}.example", 1, 1, False), stored)
    assert len(cache) == EVICT_FRACTION * 4 - 4 + 1  # a batch of four went, then one came
    assert cache.get(("n0.example", 1, 1, False)) is None
    assert cache.get(("n4.example", 1, 1, False)) is not None


def test_full_memos_forget_their_oldest_slice_not_everything(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full name memo drops its oldest sixteenth: recent names stay, answers stay right."""
    from agent.filter import fastpath

    monkeypatch.setattr(fastpath, "NAME_MEMO", 64)
    chain = setup.chain()
    fast = chain.fast
    names = [f"n{i}.unlisted.example" for i in range(200)] + ["casino.example"]
    for i, name in enumerate(names):
        for msg_id in (i, i + 1000):  # a memo takes a name the second time (Doorkeeper)
            query = query_bytes(name, packet.A, msg_id, 0x0100, None, False, 0)
            chain.resolve_fast(query, "127.0.1.5")
        assert len(fast._names) <= 64
    memo = [key.decode("ascii", "replace") for key in fast._names]
    assert len(memo) > 64 - 64 // fastpath.FORGET_FRACTION - 1  # a slice went, not all of it
    assert memo[-1].endswith("casino\x07example") and "n199" in memo[-2]
    again = query_bytes("casino.example", packet.A, 9, 0x0100, None, False, 0)
    assert chain.resolve_fast(again, "127.0.1.5") is not False
    assert full_answer(chain, again, "127.0.1.5") is not None


def test_memos_take_a_key_the_second_time_it_comes(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The doorkeeper: a packet (less its ID) and a name enter their memos on their second
    sighting, not their first; it forgets its marks after DOOR_MARKS of them; the answers
    are the same either way."""
    from agent.filter import fastpath

    monkeypatch.setattr(fastpath, "DOOR_MARKS", 8)
    chain = setup.chain()
    fast = chain.fast
    first = query_bytes("once.unlisted.example", packet.A, 1, 0x0100, None, False, 0)
    assert isinstance(chain.resolve_fast(first, "127.0.1.5"), Miss)
    assert not fast._parsed and not fast._names
    aaaa = query_bytes("once.unlisted.example", packet.AAAA, 2, 0x0100, None, False, 0)
    assert isinstance(chain.resolve_fast(aaaa, "127.0.1.5"), Miss)
    assert len(fast._names) == 1 and not fast._parsed  # the name came twice, each packet once
    blocked = query_bytes("casino.example", packet.A, 3, 0x0100, None, False, 0)
    answers = [chain.resolve_fast(bytes([0, i]) + blocked[2:], "127.0.1.5") for i in range(3)]
    assert len(fast._parsed) == 1  # taken the second time, a hit the third
    wires = [a[0][2:] for a in answers if isinstance(a, tuple)]
    assert len(wires) == 3 and len(set(wires)) == 1
    # The marks are forgotten after DOOR_MARKS of them: a key marked before is new again.
    door = fastpath.Doorkeeper()
    assert not door.admit(b"a") and door.admit(b"a")
    for key in (b"b", b"c", b"d", b"e", b"f", b"g", b"h"):
        door.admit(key)
    assert door.marks == 0 and not door.admit(b"a")


def test_a_retired_fast_path_empties_its_memos_a_slice_at_a_time(setup: Setup) -> None:
    """forget() (used on the fast path a reload replaced) frees at most `count` entries a call,
    oldest first, and the fast path still answers right afterwards."""
    chain = setup.chain()
    fast = chain.fast
    for i in range(100):
        name = f"n{i // 2}.unlisted.example" if i % 4 > 1 else "casino.example"
        chain.resolve_fast(query_bytes(name, packet.A, i, 0x0100, None, False, 0), "127.0.1.5")
    held = len(fast._parsed) + len(fast._names) + len(fast._clients) + len(fast._shapes)
    assert held > 10
    calls = 0
    while fast.forget(10):
        calls += 1
        assert calls < 1000
    assert not (fast._parsed or fast._names or fast._clients or fast._shapes)
    assert calls >= held // 10  # never more than 10 entries a call
    again = query_bytes("casino.example", packet.A, 99, 0x0100, None, False, 0)
    answered = chain.resolve_fast(again, "127.0.1.5")
    assert isinstance(answered, tuple) and answered[1].kind.value == "blocked"
    full = full_answer(chain, again, "127.0.1.5")
    assert full is not None and answered[0] == full.wire


WIRE_LABEL = st.binary(min_size=1, max_size=63) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_*/.", min_size=1, max_size=63
).map(str.encode)


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(labels=st.lists(WIRE_LABEL, max_size=6))
def test_the_fast_path_reads_a_name_as_the_labels_it_has(setup: Setup, labels: list[bytes]) -> None:
    """_learn takes a wire name (any bytes, any label length) only if every byte is one a
    plain label may hold, and then reads it as exactly its labels joined by dots; a label
    with a dot or any other byte is the full path's."""
    key = b"".join(bytes([len(label)]) + label for label in labels).lower()
    info = setup.chain().fast._learn(key, len(labels))
    plain = all(
        not label.lower().translate(None, b"abcdefghijklmnopqrstuvwxyz0123456789-_*/")
        for label in labels
    )
    if not plain:
        assert info is None
    else:
        assert info is not None and info[0] == b".".join(labels).lower().decode("ascii")
