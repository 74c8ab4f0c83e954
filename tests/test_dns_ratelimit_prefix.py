"""Rate limiting per client address and per network (/24, /56): more addresses in one network
do not buy more queries. The bucket logic table-driven on a settable clock, then the real
server over real sockets, then the config keys through `hedgerow-dns check`."""

from __future__ import annotations

import contextlib
import io
import socket
from contextlib import ExitStack
from pathlib import Path

import dnslib
import pytest

from agent.dns.cli import main
from agent.dns.config import load_config
from agent.filter.resolvers import ratelimit
from agent.filter.resolvers.ratelimit import TokenBuckets
from tests.dns_support import FakeUpstream, ask, free_dns_port, running_dns, write_config
from tests.waiting import wait_until

# (per-address rate, per-network rate, queries as (client, time)), the answers expected.
CASES: list[tuple[str, int, int, list[tuple[str, float]], list[bool]]] = [
    (
        "three addresses of one /24 share its 4",
        3,
        4,
        [("10.0.0.1", 0), ("10.0.0.2", 0), ("10.0.0.3", 0), ("10.0.0.4", 0), ("10.0.0.5", 0)],
        [True, True, True, True, False],
    ),
    (
        "another /24 has its own",
        3,
        4,
        [("10.0.0.1", 0.0)] * 3 + [("10.0.0.2", 0), ("10.0.0.3", 0), ("10.0.1.1", 0)],
        [True, True, True, True, False, True],
    ),
    (
        "the address limit still holds inside a quiet network",
        2,
        100,
        [("10.0.0.1", 0.0)] * 3,
        [True, True, False],
    ),
    (
        "a network's tokens come back at its rate",
        5,
        2,
        [("10.0.0.1", 0), ("10.0.0.2", 0), ("10.0.0.3", 0), ("10.0.0.3", 0.5), ("10.0.0.4", 0.5)],
        [True, True, False, True, False],
    ),
    (
        "IPv6 privacy addresses of one /56 share",
        3,
        2,
        [("2001:db8:0:1::a", 0), ("2001:db8:0:2::b", 0), ("2001:db8:0:ff::c", 0)],
        [True, True, False],
    ),
    (
        "the next /56 does not",
        3,
        2,
        [("2001:db8::a", 0), ("2001:db8::b", 0), ("2001:db8:0:100::a", 0)],
        [True, True, True],
    ),
    (
        "an IPv4-mapped address counts in its IPv4 /24",
        3,
        2,
        [("10.0.0.1", 0), ("::ffff:10.0.0.2", 0), ("10.0.0.3", 0)],
        [True, True, False],
    ),
    (
        "no network limit",
        2,
        0,
        [(f"10.0.0.{i}", 0) for i in range(1, 30)],
        [True] * 29,
    ),
]


@pytest.mark.parametrize(
    ("rate", "shared", "queries", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_buckets(
    rate: int, shared: int, queries: list[tuple[str, float]], expected: list[bool]
) -> None:
    now = [0.0]
    buckets = TokenBuckets(rate, clock=lambda: now[0], network_rate=shared)
    got = []
    for client, at in queries:
        now[0] = at
        got.append(buckets.allow(client))
    assert got == expected


def test_refused_by_the_network_spends_no_address_token() -> None:
    now = [0.0]
    buckets = TokenBuckets(2, clock=lambda: now[0], network_rate=2)
    assert buckets.allow("10.0.0.1") and buckets.allow("10.0.0.2")
    assert not buckets.allow("10.0.0.1")  # the /24 is empty
    now[0] = 0.5  # one network token back; 10.0.0.1 still holds one of its own
    assert buckets.allow("10.0.0.1")


def test_prefix_lengths_are_settings() -> None:
    buckets = TokenBuckets(1, network_rate=1, ipv4_prefix=16, ipv6_prefix=64)
    assert buckets.network("10.1.2.3") == buckets.network("10.1.200.3")
    assert buckets.network("10.1.2.3") != buckets.network("10.2.2.3")
    assert buckets.network("2001:db8::1") == buckets.network("2001:db8::ffff:1")
    assert buckets.network("2001:db8::1") != buckets.network("2001:db8:0:1::1")
    assert buckets.network("not an address") is None


def test_forgetting_idle_clients_keeps_a_busy_network_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fresh addresses flooding the table must not get fresh network buckets when it is pruned.
    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 8)
    now = [0.0]
    buckets = TokenBuckets(100, clock=lambda: now[0], network_rate=20)
    answers = [buckets.allow(f"2001:db8:0:{i:x}::1") for i in range(60)]
    assert answers.count(True) == 20
    assert len(buckets.table) <= 8 and len(buckets.networks) == 1


def test_twenty_addresses_of_one_24_are_limited_together(tmp_path: Path) -> None:
    # Each address stays under its own 5 per second; together they are over the /24's 20.
    with FakeUpstream() as upstream:
        path = write_config(tmp_path, [upstream.address], free_dns_port(), rate=5)
        text = path.read_text().replace(
            "rate_limit_qps = 5", "rate_limit_qps = 5\nrate_limit_prefix_qps = 20"
        )
        path.write_text(text)
        with running_dns(path) as dns, ExitStack() as stack:
            pupils = []
            for i in range(1, 21):
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                sock.bind((f"127.0.1.{i}", 0))
                sock.settimeout(5)
                pupils.append(sock)
            query = dnslib.DNSRecord.question("casino.example").pack()
            for _ in range(3):  # sent at once, so few tokens come back meanwhile
                for sock in pupils:
                    sock.sendto(query, ("127.0.0.1", dns.port))
            codes = [sock.recv(512)[3] & 0xF for sock in pupils for _ in range(3)]
            assert codes.count(0) >= 20  # the /24's 20, and each address had 5 of its own
            assert codes.count(5) >= 30  # 60 asked, 20 tokens and a few refilled
            assert ask(dns.port, "casino.example", "A", "127.0.2.1").header.rcode == 0
            assert ask(dns.port, "casino.example", "A", "127.0.2.2", tcp=True).header.rcode == 0
            metrics = dns.service.metrics
            assert metrics is not None
            labels = {"verdict": "refused", "category": "", "group": "pupils"}
            wait_until(
                lambda: metrics.value("hedgerow_dns_queries_total", labels) == codes.count(5)
            )


def _check(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", "--config", str(path)])
    return code, out.getvalue() + err.getvalue()


def test_config_defaults_and_check(tmp_path: Path) -> None:
    path = write_config(tmp_path, ["127.0.0.1:5353"], free_dns_port(), rate=200)
    server = load_config(path).server
    assert (server.rate_limit_prefix_qps, server.rate_limit_ipv4_prefix) == (2000, 24)
    assert server.rate_limit_ipv6_prefix == 56
    spec = load_config(path).spec
    assert (spec.rate_limit_prefix_qps, spec.rate_limit_ipv6_prefix) == (2000, 56)
    original = path.read_text()
    for bad, needle in (
        ("rate_limit_ipv4_prefix = 33", "[server] rate_limit_ipv4_prefix = 33"),
        ("rate_limit_ipv6_prefix = 8", "[server] rate_limit_ipv6_prefix = 8"),
        ("rate_limit_prefix_qps = -1", "[server] rate_limit_prefix_qps = -1"),
        ('rate_limit_prefix_qps = "many"', "must be an integer"),
    ):
        path.write_text(original.replace("rate_limit_qps = 200", f"rate_limit_qps = 200\n{bad}"))
        code, output = _check(path)
        assert code != 0 and needle in output, output
    path.write_text(
        original.replace(
            "rate_limit_qps = 200",
            "rate_limit_qps = 200\nrate_limit_prefix_qps = 0\nrate_limit_ipv6_prefix = 64",
        )
    )
    code, output = _check(path)
    assert code == 0, output
