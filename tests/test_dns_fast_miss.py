"""The fast path's cache misses (FastPath.resolve's Miss, DnsServer.answer_miss) against the full
chain, through the real server on loopback and a real fake upstream: for generated misses the
reply is byte-identical to the full chain's and the verdict equal (RESOLVED, not CACHED), with
CNAME/DNAME/HTTPS-cloaked answers, allowlisted names, concurrent identical misses, answers the
cache does not keep, too-big answers, failing and silent upstreams, and a reload in between."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.dns.service import load_all
from agent.filter import packet
from agent.filter.answer_cache import AnswerCache
from agent.filter.chain import Chain, build_chain
from agent.filter.querylog import QueryRecord
from agent.filter.request import Pending, Request
from agent.filter.resolvers.forward import Forwarder
from agent.filter.upstreams import Upstreams
from agent.filter.verdict import Kind
from tests.dns_support import (
    Clock,
    FakeUpstream,
    RunningDns,
    fake_answer,
    free_dns_port,
    running_dns,
    term_time,
    write_config,
)
from tests.test_dns_fastpath import CLOAKS, query_bytes

PUPIL, STAFF = "127.0.1.5", "127.0.2.5"
_UNIQUE = re.compile(r"^m\d+\.")


@dataclass
class CloakingUpstream(FakeUpstream):
    """FakeUpstream, plus: `m<n>.<name>` for a CLOAKS name answers with its CNAME, DNAME or
    SVCB/HTTPS target; `ttl0<n>.example` has TTL 0 (not cached); `slow<n>.example` answers
    after `delay_s`."""

    delay_s: float = 0.5
    asked: threading.Event = field(default_factory=threading.Event)

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        request = dnslib.DNSRecord.parse(data)
        qname = str(request.q.qname).rstrip(".").lower()
        self.queries.append((qname, request.q.qtype, transport))
        self.asked.set()
        if self.mode == "silent":
            return None
        if qname.startswith("slow"):
            time.sleep(self.delay_s)
        base = _UNIQUE.sub("", qname)
        if base in CLOAKS:
            return bytes(_cloak_reply(request, qname, base).pack())
        reply = fake_answer(request)
        if qname.startswith("ttl0"):
            for record in reply.rr:
                record.ttl = 0
        return bytes(reply.pack())


def _cloak_reply(request: dnslib.DNSRecord, qname: str, base: str) -> dnslib.DNSRecord:
    """As test_dns_fastpath.cloaked_stored, for an owner under the CLOAKS name."""
    rtype, target = CLOAKS[base]
    qtype = request.q.qtype
    reply = request.reply()
    if rtype in (packet.SVCB, packet.HTTPS):
        if qtype in (packet.SVCB, packet.HTTPS):
            priority = 0 if rtype == packet.HTTPS else 1
            rdata = struct.pack("!H", priority) + packet.encode_name(target)
            reply.add_answer(dnslib.RR(qname, qtype, rdata=dnslib.RD(rdata), ttl=300))
        return reply
    if rtype == packet.DNAME:
        zone = qname.split(".", 1)[1]
        reply.add_answer(dnslib.RR(zone, rtype, rdata=dnslib.DNAME(target), ttl=300))
        target = qname.split(".", 1)[0] + "." + target
    reply.add_answer(dnslib.RR(qname, packet.CNAME, rdata=dnslib.CNAME(target), ttl=300))
    if qtype == packet.A:
        reply.add_answer(dnslib.RR(target, rdata=dnslib.A("192.0.2.7"), ttl=300))
    return reply


class Records:
    """A query sink that keeps every record (the server's verdicts, as the hub would see them)."""

    def __init__(self) -> None:
        self.records: list[QueryRecord] = []

    def offer(self, record: QueryRecord) -> None:
        """Keep it."""
        self.records.append(record)

    def wait_for(self, qname: str, count: int = 1) -> list[QueryRecord]:
        """The records of `qname`, once there are `count` (the reply may overtake its record)."""
        deadline = time.monotonic() + 5
        while True:
            found = [r for r in list(self.records) if r.qname == qname]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) == count, (qname, found)
                return found
            time.sleep(0.005)


@dataclass
class Harness:
    """The real service on loopback, plus a full chain of the same config on its own cache and
    upstream pool (the reference), on the service's event loop."""

    dns: RunningDns
    reference: Chain
    records: Records
    upstream: CloakingUpstream
    fallbacks: list[str] = field(default_factory=list)  # misses the full chain answered
    full_path: list[bytes] = field(default_factory=list)  # queries DnsServer.handle saw
    counter: list[int] = field(default_factory=lambda: [0])

    def name(self, template: str) -> str:
        """A name never asked before, from a template with {n}."""
        self.counter[0] += 1
        return template.format(n=self.counter[0])

    def watch(self) -> None:
        """Count the server's full-path queries and the misses answered by the full chain."""
        server = self.dns.service.server
        assert server is not None
        handle = server.handle

        def counted(data: bytes, *args: Any) -> Any:
            self.full_path.append(data)
            return handle(data, *args)

        setattr(server, "handle", counted)  # noqa: B010 (an instance attribute over the method)
        self._watch_chain(server.chain)

    def _watch_chain(self, chain: Chain) -> None:
        answer_fetched = chain.answer_fetched

        def counted(request: Request, *args: Any) -> Any:
            self.fallbacks.append(request.query.qname)
            return answer_fetched(request, *args)

        setattr(chain, "answer_fetched", counted)  # noqa: B010 (as above)

    def expected(
        self, data: bytes, client: str
    ) -> tuple[bytes, tuple[str, str, str | None, str | None]]:
        """The full chain's reply to a UDP query (TC when too big, as the server sends it)."""

        async def run() -> tuple[bytes, tuple[str, str, str | None, str | None]]:
            chain = self.reference
            q = packet.parse_query(data)
            outcome = chain.resolve(Request(q, client, "udp", chain.clock()))
            answer = await outcome.run() if isinstance(outcome, Pending) else outcome
            wire = answer.wire
            assert self.dns.service.server is not None
            if len(wire) > max(512, min(q.reply_limit, self.dns.service.server.max_udp_size)):
                wire = packet.truncated(q)
            v = answer.verdict
            return wire, (v.kind.value, v.group, v.category, v.rule)

        return asyncio.run_coroutine_threadsafe(run(), self.dns.loop).result(30)

    def compare(self, data: bytes, client: str) -> QueryRecord:
        """Ask the server, then the reference; fail unless reply and verdict are the same."""
        qname = packet.parse_query(data).qname
        reply = _udp(self.dns.port, data, client)
        (record,) = self.records.wait_for(qname)
        wire, verdict = self.expected(data, client)
        assert reply == wire, (qname, client)
        assert (record.verdict, record.group, record.category, record.rule) == verdict, qname
        return record


def _udp(port: int, data: bytes, source: str, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.sendto(data, ("127.0.0.1", port))
        return sock.recv(65535)


@contextmanager
def harness(
    directory: Path, mode: str = "answer", timeout_ms: int = 1500, udp_batch: int | None = None
) -> Iterator[Harness]:
    """The service and its reference, both against one CloakingUpstream."""
    upstream = CloakingUpstream(mode=mode)
    with upstream:
        config = write_config(
            directory,
            [upstream.address],
            free_dns_port(),
            timeout_ms=timeout_ms,
            udp_batch=udp_batch,
        )
        clock = Clock(term_time())
        records = Records()
        with running_dns(config, clock=clock, sinks=(records,)) as dns:
            loaded = load_all(config)
            spec = loaded.config
            forwarder = Forwarder(
                AnswerCache(spec.cache.max_entries, spec.cache.max_ttl_s),
                Upstreams(spec.upstream),
            )
            reference = build_chain(spec.spec, loaded.index, forwarder, clock=clock)
            found = Harness(dns, reference, records, upstream)
            found.watch()
            try:
                yield found
            finally:
                asyncio.run_coroutine_threadsafe(_close(forwarder), dns.loop).result(10)


async def _close(forwarder: Forwarder) -> None:
    forwarder.upstreams.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with harness(tmp_path_factory.mktemp("miss")) as found:
        yield found


# Templates of names never asked before: plain, allowlisted for pupils (bbc.co.uk,
# lucky.casino.example), cloaked (CLOAKS, under a fresh label), NXDOMAIN, not cached (TTL 0),
# and what the full chain must answer instead (SERVFAIL upstream, too big for UDP).
PLAIN = ["m{n}.unlisted.example", "m{n}.ok.social.example", "ttl0{n}.example", "nx{n}.example"]
ALLOWED = ["m{n}.bbc.co.uk", "m{n}.lucky.casino.example"]
CLOAKED = ["m{n}." + name for name in CLOAKS]
FALLBACK = ["servfail{n}.example", "big{n}.example"]
QTYPES = [packet.A, packet.AAAA, packet.TXT, packet.HTTPS, packet.SVCB, 15]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    template=st.sampled_from(PLAIN + ALLOWED + CLOAKED + FALLBACK),
    qtype=st.sampled_from(QTYPES),
    msg_id=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFFFF),
    edns=st.none() | st.sampled_from([512, 1232, 4096, 600]),
    do=st.booleans(),
    case=st.integers(0, 2**30),
    client=st.sampled_from([PUPIL, STAFF]),
)
def test_a_miss_is_answered_like_the_full_chain(
    served: Harness,
    template: str,
    qtype: int,
    msg_id: int,
    flags: int,
    edns: int | None,
    do: bool,
    case: int,
    client: str,
) -> None:
    name = served.name(template)
    data = query_bytes(name, qtype, msg_id, flags, edns, do, case)
    record = served.compare(data, client)
    assert record.verdict != Kind.CACHED.value  # a miss is resolved (or blocked), never cached


@pytest.mark.parametrize("client", [PUPIL, STAFF])
@pytest.mark.parametrize("template", PLAIN + ALLOWED + CLOAKED)
@pytest.mark.parametrize("qtype", [packet.A, packet.AAAA, packet.SVCB])
def test_common_misses_never_walk_the_full_chain(
    served: Harness, template: str, qtype: int, client: str
) -> None:
    name = served.name(template)
    data = query_bytes(name, qtype, 77, 0x0100, 1232, False, 0)
    before = len(served.full_path), len(served.fallbacks)
    record = served.compare(data, client)
    assert (len(served.full_path), len(served.fallbacks)) == before, record
    if template in ALLOWED and client == PUPIL and record.verdict == Kind.RESOLVED.value:
        assert record.rule is not None and record.rule.startswith("allow ")
    # The next one is a cache hit (unless the answer is one the cache does not keep).
    again = query_bytes(name, qtype, 78, 0x0100, 1232, False, 0)
    _udp(served.dns.port, again, client)
    second = served.records.wait_for(name, 2)[1]
    assert second.verdict in {
        k.value for k in (Kind.CACHED, Kind.RESOLVED, Kind.BLOCKED, Kind.FILTERED)
    }


def test_cloaked_misses_are_blocked_for_their_target(served: Harness) -> None:
    cases = [
        ("m{n}.cloaked.example", packet.A, PUPIL, "gambling", "casino.example"),
        ("m{n}.iwf.bbc.co.uk", packet.A, PUPIL, "iwf", "a.csam.example"),
        ("m{n}.alias.cloaked.example", packet.HTTPS, STAFF, "adult", "adult.example"),
        ("m{n}.www.dname.cloaked.example", packet.A, PUPIL, "gambling", "bets.example"),
    ]
    for template, qtype, client, category, target in cases:
        record = served.compare(
            query_bytes(served.name(template), qtype, 5, 0x0100, None, False, 0), client
        )
        assert (record.verdict, record.category) == (Kind.BLOCKED.value, category), template
        assert record.rule is not None and target in record.rule


def test_the_fallbacks_keep_the_full_chains_answer(served: Harness) -> None:
    # An upstream SERVFAIL: SERVFAIL with the full chain's rule; a TXT too big for UDP: TC.
    before = len(served.fallbacks)
    failed = served.compare(
        query_bytes(served.name("servfail{n}.example"), 1, 9, 0x0100, None, False, 0), PUPIL
    )
    assert failed.verdict == Kind.SERVFAIL.value and "all upstreams failed" in (failed.rule or "")
    big = query_bytes(served.name("big{n}.example"), packet.TXT, 10, 0x0100, 1232, False, 0)
    record = served.compare(big, STAFF)
    assert record.verdict == Kind.RESOLVED.value
    assert len(served.fallbacks) == before + 2


def test_concurrent_identical_misses_ask_once_and_all_get_the_answer(served: Harness) -> None:
    name = served.name("m{n}.unlisted.example")
    socks = []
    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.bind((PUPIL, 0))
        socks.append(sock)
    try:
        for i, sock in enumerate(socks):
            sock.sendto(
                query_bytes(name, packet.A, 1000 + i, 0x0100, None, False, 0),
                ("127.0.0.1", served.dns.port),
            )
        replies = [sock.recv(65535) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    records = served.records.wait_for(name, 20)
    assert served.upstream.count(name) == 1
    wire, _ = served.expected(query_bytes(name, packet.A, 1000, 0x0100, None, False, 0), PUPIL)
    for i, reply in enumerate(replies):
        assert reply[2:] == wire[2:] and reply[:2] == struct.pack("!H", 1000 + i)
    # The first ones in flight are resolved; any that came after the answer was kept are cached.
    assert {r.verdict for r in records} <= {Kind.RESOLVED.value, Kind.CACHED.value}
    assert records[0].verdict == Kind.RESOLVED.value


def test_a_silent_upstream_times_out_like_the_full_chain(tmp_path: Path) -> None:
    with harness(tmp_path, mode="silent", timeout_ms=300) as found:
        for template, qtype in (
            ("m{n}.unlisted.example", packet.A),
            ("m{n}.bbc.co.uk", packet.AAAA),
        ):
            data = query_bytes(found.name(template), qtype, 3, 0x0100, 1232, True, 0)
            record = found.compare(data, PUPIL)
            assert record.verdict == Kind.SERVFAIL.value
            assert record.rule is not None and record.rule.endswith("(last: timeout)")
        assert len(found.fallbacks) == 2 and not found.full_path


def test_a_reload_while_a_miss_is_in_flight_answers_from_the_new_chain(tmp_path: Path) -> None:
    with harness(tmp_path) as found:
        server = found.dns.service.server
        assert server is not None
        name = found.name("slow{n}.example")
        data = query_bytes(name, packet.A, 11, 0x0100, None, False, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.bind((PUPIL, 0))
            sock.sendto(data, ("127.0.0.1", found.dns.port))
            assert found.upstream.asked.wait(5)
            old = server.chain
            # What Service._swap does on reload: a new chain (and fast path) between two packets.
            spec = found.dns.service.loaded
            assert spec is not None and found.dns.service._forwarder is not None
            new = build_chain(
                spec.config.spec, spec.index, found.dns.service._forwarder, clock=old.clock
            )
            found._watch_chain(new)
            found.dns.loop.call_soon_threadsafe(setattr, server, "chain", new)
            reply = sock.recv(65535)
        (record,) = found.records.wait_for(name)
        assert found.fallbacks == [name]  # the retired fast path handed it to the new chain
        wire, verdict = found.expected(data, PUPIL)
        assert reply == wire
        assert (record.verdict, record.group, record.category, record.rule) == verdict


def test_a_miss_spends_one_rate_limit_token_and_counts_one_cache_miss(tmp_path: Path) -> None:
    # Two tokens a client: if the answer step took one again, the second miss would be refused.
    with CloakingUpstream() as upstream:
        config = write_config(tmp_path, [upstream.address], free_dns_port(), rate=2)
        records = Records()
        with running_dns(config, clock=Clock(term_time()), sinks=(records,)) as dns:
            cache = dns.service.cache
            assert cache is not None
            misses = cache.misses
            for i in range(2):
                name = f"m{i}.unlisted.example"
                reply = _udp(
                    dns.port, query_bytes(name, packet.A, i, 0x0100, None, False, 0), PUPIL
                )
                assert reply[3] & 0xF == packet.NOERROR
                assert records.wait_for(name)[0].verdict == Kind.RESOLVED.value
            assert cache.misses == misses + 2
            third = _udp(
                dns.port, query_bytes("m9.unlisted.example", 1, 9, 0x0100, None, False, 0), PUPIL
            )
            assert third[3] & 0xF == packet.REFUSED


def test_ask_then_shares_one_query_and_survives_a_failing_caller(tmp_path: Path) -> None:
    """Upstreams.ask_then: callers of one question share one upstream query with ask()'s
    futures; a caller that raises is logged and the others still get the answer; a silent
    upstream fails them all with UpstreamError."""
    from agent.filter.upstreams import UpstreamError

    async def run(address: str) -> tuple[list[object], object]:
        config = write_config(tmp_path, [address], free_dns_port(), timeout_ms=300)
        upstreams = Upstreams(load_all(config).config.upstream)
        got: list[object] = []

        def failing(outcome: object) -> None:
            raise RuntimeError("a caller's bug")

        try:
            future = upstreams.ask("m1.unlisted.example", packet.A, 1, False)
            upstreams.ask_then(("m1.unlisted.example", packet.A, 1, False), failing)
            upstreams.ask_then(("m1.unlisted.example", packet.A, 1, False), got.append)
            try:
                answer: object = await asyncio.wait_for(future, 5)
            except UpstreamError as exc:
                answer = exc
            await asyncio.sleep(0)
            return got, answer
        finally:
            upstreams.close()

    with CloakingUpstream() as upstream:
        got, answer = asyncio.run(run(upstream.address))
        assert upstream.count("m1.unlisted.example") == 1
        assert got == [answer] and not isinstance(answer, Exception)
    with CloakingUpstream(mode="silent") as silent:
        got, answer = asyncio.run(run(silent.address))
        assert isinstance(answer, UpstreamError) and len(got) == 1
        assert isinstance(got[0], UpstreamError)


def test_one_datagram_per_callback_answers_misses_the_same(tmp_path: Path) -> None:
    # udp_batch = 0: asyncio's datagram transport (UdpProtocol) instead of recvmmsg/sendmmsg.
    with harness(tmp_path, udp_batch=0) as found:
        for template in PLAIN + ALLOWED + CLOAKED[:3] + FALLBACK:
            for client in (PUPIL, STAFF):
                qtype = packet.TXT if template.startswith("big") else packet.A
                data = query_bytes(found.name(template), qtype, 21, 0x0100, None, False, 0)
                found.compare(data, client)
        assert not found.full_path  # every one went the fast path's way first
        assert len(found.fallbacks) == 2 * len(FALLBACK)
