"""hedgerow-dns end to end: a real upstream on loopback, the filter on real sockets, queries by
dnslib and by dig from source addresses that pick the group."""

from __future__ import annotations

from collections.abc import Iterator

import dnslib
import pytest

from agent.filter.querylog import QueryRecord
from tests.dns_support import (
    SAFE_ADDRESS,
    Clock,
    FakeUpstream,
    RunningDns,
    ask,
    dig,
    free_dns_port,
    raw,
    running_dns,
    saturday,
    term_time,
    write_config,
)
from tests.waiting import wait_until

PUPIL = "127.0.1.5"
STAFF = "127.0.2.5"
VISITOR = "127.0.9.9"  # allowed, in no group: the default group (pupils)
OUTSIDER = "127.200.0.1"


class Records:
    """A query-record sink that keeps everything (tests only)."""

    def __init__(self) -> None:
        self.items: list[QueryRecord] = []

    def offer(self, record: QueryRecord) -> None:
        self.items.append(record)


# Every test runs against both UDP listeners: batched (recvmmsg/sendmmsg, the default on
# Linux) and asyncio's datagram transport (udp_batch = 0, and platforms without recvmmsg).
@pytest.fixture(scope="module", params=[32, 0], ids=["batched", "plain"])
def udp_batch(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="module")
def upstream(udp_batch: int) -> Iterator[FakeUpstream]:  # one per listener kind: fresh counts
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(term_time())


@pytest.fixture(scope="module")
def records() -> Records:
    return Records()


@pytest.fixture(scope="module")
def dns(
    udp_batch: int,
    tmp_path_factory: pytest.TempPathFactory,
    upstream: FakeUpstream,
    clock: Clock,
    records: Records,
) -> Iterator[RunningDns]:
    port = free_dns_port()
    path = write_config(
        tmp_path_factory.mktemp("dns"),
        [upstream.address],
        port,
        listen=[f"127.0.0.1:{port}", f"[::1]:{port}"],
        udp_batch=udp_batch,
    )
    with running_dns(path, clock, (records,)) as running:
        yield running


def addresses(reply: dnslib.DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype in (dnslib.QTYPE.A, dnslib.QTYPE.AAAA)]


def rcode(reply: dnslib.DNSRecord) -> str:
    return str(dnslib.RCODE.get(reply.header.rcode))


def ede(reply: dnslib.DNSRecord) -> int | None:
    for rr in reply.ar:
        if rr.rtype == dnslib.QTYPE.OPT:
            for opt in rr.rdata:
                if opt.code == 15:
                    return int.from_bytes(bytes(opt.data)[:2], "big")
    return None


@pytest.mark.parametrize(
    ("name", "qtype", "source", "want_rcode", "want"),
    [
        # statutory: blocked for every group, even though pupils "allow" the name
        ("csam.example", "A", PUPIL, "NOERROR", ["0.0.0.0"]),
        ("csam.example", "A", STAFF, "NOERROR", ["0.0.0.0"]),
        ("www.csam.example", "AAAA", STAFF, "NOERROR", ["::"]),
        # categories per group
        ("casino.example", "A", PUPIL, "NOERROR", ["0.0.0.0"]),
        ("casino.example", "A", STAFF, "NOERROR", ["192.0.2.1"]),
        ("x.bets.example", "A", PUPIL, "NOERROR", ["0.0.0.0"]),
        ("bets.example", "A", PUPIL, "NOERROR", ["192.0.2.1"]),  # *.name: subdomains only
        ("adult.example", "A", STAFF, "NOERROR", ["0.0.0.0"]),
        ("adult.example", "MX", STAFF, "NOERROR", []),
        ("adult.example", "A", VISITOR, "NOERROR", ["0.0.0.0"]),  # default group
        # allowlist beats the category, for that group only
        ("lucky.casino.example", "A", PUPIL, "NOERROR", ["192.0.2.1"]),
        ("www.bbc.co.uk", "A", PUPIL, "NOERROR", ["192.0.2.1"]),
        # adblock exception
        ("ok.social.example", "A", PUPIL, "NOERROR", ["192.0.2.1"]),
        # bypass rules
        ("use-application-dns.net", "A", PUPIL, "NXDOMAIN", []),
        ("mask.icloud.com", "A", STAFF, "NXDOMAIN", []),
        ("mask-h2.icloud.com", "AAAA", PUPIL, "NXDOMAIN", []),
        ("_dns.resolver.arpa", "SVCB", PUPIL, "NOERROR", []),
        # ECH: pupils withhold HTTPS records, staff get them
        ("example.org", "HTTPS", PUPIL, "NOERROR", []),
        # upstream passthrough
        ("example.org", "AAAA", STAFF, "NOERROR", ["2001:db8::1"]),
        ("nx-name.example", "A", STAFF, "NXDOMAIN", []),
    ],
)
def test_verdicts_by_group(
    dns: RunningDns, name: str, qtype: str, source: str, want_rcode: str, want: list[str]
) -> None:
    reply = ask(dns.port, name, qtype, source)
    assert rcode(reply) == want_rcode, reply
    assert addresses(reply) == want, reply
    assert reply.header.qr == 1 and reply.header.ra == 1


def test_staff_get_https_records(dns: RunningDns) -> None:
    reply = ask(dns.port, "example.org", "HTTPS", STAFF)
    assert rcode(reply) == "NOERROR" and len(reply.rr) == 1


def test_blocked_answer_has_short_ttl_and_ede(dns: RunningDns) -> None:
    reply = ask(dns.port, "casino.example", "A", PUPIL, edns=1232)
    assert reply.rr[0].ttl == 60
    assert ede(reply) == 15  # Blocked
    plain = ask(dns.port, "casino.example", "A", PUPIL)
    assert ede(plain) is None and not plain.ar  # no EDNS in, no OPT out
    filtered = ask(dns.port, "example.org", "HTTPS", PUPIL, edns=1232)
    assert ede(filtered) == 17  # Filtered


def test_outsider_refused(dns: RunningDns) -> None:
    assert rcode(ask(dns.port, "example.org", "A", OUTSIDER)) == "REFUSED"
    assert rcode(ask(dns.port, "casino.example", "A", OUTSIDER, tcp=True)) == "REFUSED"


def test_schedule_blocks_only_in_hours(dns: RunningDns, clock: Clock) -> None:
    assert addresses(ask(dns.port, "social.example", "A", PUPIL)) == ["0.0.0.0"]
    clock.now = saturday()
    try:
        assert addresses(ask(dns.port, "social.example", "A", PUPIL)) == ["192.0.2.1"]
    finally:
        clock.now = term_time()
    assert addresses(ask(dns.port, "social.example", "A", PUPIL)) == ["0.0.0.0"]


@pytest.mark.parametrize(
    ("name", "source", "target", "address"),
    [
        ("www.google.com", PUPIL, "forcesafesearch.google.com.", SAFE_ADDRESS),
        ("google.co.uk", PUPIL, "forcesafesearch.google.com.", SAFE_ADDRESS),
        ("www.youtube.com", PUPIL, "restrict.youtube.com.", SAFE_ADDRESS),
        ("youtubei.googleapis.com", PUPIL, "restrict.youtube.com.", SAFE_ADDRESS),
        ("m.youtube.com", STAFF, "restrictmoderate.youtube.com.", "216.239.38.119"),
        ("duckduckgo.com", PUPIL, "safe.duckduckgo.com.", SAFE_ADDRESS),
    ],
)
def test_safesearch_cname(
    dns: RunningDns, name: str, source: str, target: str, address: str
) -> None:
    reply = ask(dns.port, name, "A", source)
    assert rcode(reply) == "NOERROR"
    assert reply.rr[0].rtype == dnslib.QTYPE.CNAME and str(reply.rr[0].rdata) == target
    assert addresses(reply) == [address]


def test_safesearch_cname_chain_and_staff_unfiltered(dns: RunningDns) -> None:
    reply = ask(dns.port, "www.bing.com", "A", PUPIL)
    kinds = [(dnslib.QTYPE.get(rr.rtype), str(rr.rdata)) for rr in reply.rr]
    assert kinds == [
        ("CNAME", "strict.bing.com."),
        ("CNAME", "strict-bing.example."),
        ("A", "204.79.197.220"),
    ]
    assert addresses(ask(dns.port, "www.google.com", "A", STAFF)) == ["192.0.2.1"]
    # HTTPS for a SafeSearch name would carry hints past the rewrite: withheld
    assert not ask(dns.port, "www.google.com", "HTTPS", PUPIL).rr


def test_cache_counts_down_and_serves_without_upstream(
    dns: RunningDns, upstream: FakeUpstream
) -> None:
    before = upstream.count("cached.example")
    first = ask(dns.port, "cached.example", "A", STAFF)
    second = ask(dns.port, "CACHED.example", "A", STAFF)
    assert upstream.count("cached.example") == before + 1
    assert addresses(first) == addresses(second) == ["192.0.2.1"]
    assert second.rr[0].ttl <= first.rr[0].ttl
    assert str(second.q.qname) == "CACHED.example."  # the client's case is echoed


def test_negative_answers_cached(dns: RunningDns, upstream: FakeUpstream) -> None:
    for _ in range(3):
        assert rcode(ask(dns.port, "nx-cached.example", "A", STAFF)) == "NXDOMAIN"
    assert upstream.count("nx-cached.example") == 1


def test_tc_and_tcp_fallback(dns: RunningDns, upstream: FakeUpstream) -> None:
    udp = ask(dns.port, "big.example", "TXT", STAFF)
    assert udp.header.tc == 1 and not udp.rr
    tcp = ask(dns.port, "big.example", "TXT", STAFF, tcp=True)
    assert tcp.header.tc == 0 and len(tcp.rr) == 40
    assert ("big.example", 16, "tcp") in upstream.queries  # we retried upstream over TCP
    out = dig(dns.port, "big.example", "TXT", source=STAFF)  # dig retries over TCP itself
    assert "retrying in TCP mode" in out and "status: NOERROR" in out
    assert out.count("IN\tTXT") == 41  # the question line and 40 answers


def test_edns_size_honoured(dns: RunningDns) -> None:
    small = ask(dns.port, "big.example", "TXT", STAFF, edns=1232)
    assert small.header.tc == 1
    # dnslib packs 40 * ~75 bytes: more than 1232, so still TC under our max_udp_size
    big = ask(dns.port, "big.example", "TXT", STAFF, edns=4096)
    assert big.header.tc == 1


def test_tcp_several_queries_per_connection(dns: RunningDns) -> None:
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", dns.port), timeout=5) as sock:
        for name in ("casino.example", "example.com", "www.google.com"):
            query = dnslib.DNSRecord.question(name).pack()
            sock.sendall(struct.pack("!H", len(query)) + query)
            size = struct.unpack("!H", sock.recv(2, socket.MSG_WAITALL))[0]
            reply = dnslib.DNSRecord.parse(sock.recv(size, socket.MSG_WAITALL))
            assert reply.header.rcode == 0 and reply.rr


def test_ipv6_loopback(dns: RunningDns) -> None:
    reply = ask(dns.port, "casino.example", "AAAA", "::1", host="::1")
    assert addresses(reply) == ["::"]
    out = dig(dns.port, "example.com", "AAAA", "+short", source="::1", host="::1")
    assert out.strip() == "2001:db8::1"


def test_dig_sees_blocked_allowed_and_refused(dns: RunningDns) -> None:
    assert dig(dns.port, "casino.example", "+short", source=PUPIL).strip() == "0.0.0.0"
    assert dig(dns.port, "casino.example", "+short", source=STAFF).strip() == "192.0.2.1"
    assert "status: REFUSED" in dig(dns.port, "example.com", source=OUTSIDER)
    out = dig(dns.port, "www.google.com", source=PUPIL)
    assert "forcesafesearch.google.com." in out and SAFE_ADDRESS in out
    assert "status: NXDOMAIN" in dig(dns.port, "use-application-dns.net", source=PUPIL)


def test_malformed_gets_formerr(dns: RunningDns) -> None:
    query = dnslib.DNSRecord.question("example.com").pack()
    cut = raw(dns.port, query[:-3], PUPIL)  # question cut short
    assert cut[:2] == query[:2] and cut[3] & 0xF == 1
    two = bytearray(query)
    two[5] = 2  # QDCOUNT = 2
    assert raw(dns.port, bytes(two), PUPIL)[3] & 0xF == 1
    notify = bytearray(query)
    notify[2] |= 0x20  # opcode 4 (NOTIFY)
    assert raw(dns.port, bytes(notify), PUPIL)[3] & 0xF == 4  # NOTIMP


def test_every_answer_is_recorded_with_its_verdict(dns: RunningDns, records: Records) -> None:
    # Every kind of answer, asked here: what other tests asked does not count. A record is
    # offered after its reply is sent, so each is waited for.
    start = len(records.items)
    asked = [
        ("blocked", "casino.example", "A", PUPIL),
        ("rewritten", "www.google.com", "A", PUPIL),
        ("resolved", "recorded.example", "A", STAFF),
        ("cached", "recorded.example", "A", STAFF),
        ("refused", "example.org", "A", OUTSIDER),
        ("bypass", "use-application-dns.net", "A", PUPIL),
        ("filtered", "example.org", "HTTPS", PUPIL),
    ]
    for verdict, name, qtype, source in asked:
        ask(dns.port, name, qtype, source)

        def recorded(verdict: str = verdict, name: str = name, source: str = source) -> bool:
            return any(
                (r.verdict, r.qname, r.client_ip) == (verdict, name, source)
                for r in records.items[start:]
            )

        wait_until(recorded, 10, 0.01, f"a {verdict} record of {name} from {source}")
    blocked = next(r for r in records.items[start:] if r.verdict == "blocked")
    assert (blocked.qname, blocked.group, blocked.category) == (
        "casino.example",
        "pupils",
        "gambling",
    )
    assert blocked.rule and blocked.rule.endswith("gambling.txt")


def test_beacon_not_configured_is_nxdomain_and_not_forwarded(
    dns: RunningDns, upstream: FakeUpstream
) -> None:
    reply = ask(dns.port, "abcdefabcdefabcdef.beacon.hedgerow.internal", "TXT", PUPIL)
    assert rcode(reply) == "NXDOMAIN"
    assert not any(name.endswith("hedgerow.internal") for name, _, _ in upstream.queries)


def test_metrics_count_verdicts(dns: RunningDns) -> None:
    metrics = dns.service.metrics
    assert metrics is not None
    labels = {"verdict": "blocked", "category": "adult", "group": "staff"}
    before = metrics.value("hedgerow_dns_queries_total", labels)
    timed = metrics.value("hedgerow_dns_latency_seconds_count")
    ask(dns.port, "adult.example", "A", STAFF)

    def counted() -> bool:  # after the reply is sent: wait for this query's count and time
        count = metrics.value("hedgerow_dns_queries_total", labels)
        return count == before + 1 and metrics.value("hedgerow_dns_latency_seconds_count") > timed

    wait_until(counted, 10, 0.01, "the blocked query counted and timed")
    assert metrics.value("hedgerow_dns_queries_total", labels) == before + 1
