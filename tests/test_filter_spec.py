"""The filter engine built from a FilterSpec alone, as the laptop agent will build it: no TOML
file anywhere, only list files and typed values. It serves on a real UDP/TCP socket against a
real upstream on loopback, and answers by group exactly as the Pi daemon does."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dnslib
import pytest
import uvloop

from agent.filter.answer_cache import AnswerCache
from agent.filter.catalog import load_index
from agent.filter.chain import build_chain
from agent.filter.lists import ListSpec
from agent.filter.resolvers.forward import Forwarder
from agent.filter.server import DnsServer
from agent.filter.spec import Endpoint, FilterSpec, GroupSpec, UpstreamServer, UpstreamSpec
from agent.filter.upstreams import Upstreams
from agent.filter.verdict import Kind
from tests.dns_support import FakeUpstream, ask


def _spec(tmp_path: Path, upstream_port: int, **changes: object) -> FilterSpec:
    (tmp_path / "gambling.txt").write_text("casino.example\n||bets.example^\n")
    (tmp_path / "adult.hosts").write_text("0.0.0.0 adult.example\n")
    values: dict[str, object] = {
        "lists": (
            ListSpec("gambling", str(tmp_path / "gambling.txt")),
            ListSpec("adult", str(tmp_path / "adult.hosts")),
        ),
        "groups": (
            GroupSpec("pupils", (ipaddress.ip_network("127.0.1.0/24"),), block=("gambling", "adult")),
            GroupSpec("staff", (ipaddress.ip_network("127.0.2.0/24"),), block=("adult",)),
        ),
        "default_group": "pupils",
        "upstream": UpstreamSpec((UpstreamServer("127.0.0.1", upstream_port),), timeout_ms=2000),
        "allow_clients": (ipaddress.ip_network("127.0.0.0/8"),),
        "list_cache_dir": tmp_path / "cache",
        "rate_limit_qps": 0,
    }
    values.update(changes)
    return FilterSpec(**values)  # type: ignore[arg-type]


@contextmanager
def _serving(spec: FilterSpec) -> Iterator[int]:
    """The engine from the spec, listening on 127.0.0.1 (a free port) in a loop of its own."""
    _, index, _ = load_index(spec)
    cache = AnswerCache(spec.cache.max_entries, spec.cache.max_ttl_s)
    chain = build_chain(spec, index, Forwarder(cache, Upstreams(spec.upstream)), clock=lambda: 0.0)
    server = DnsServer(chain, max_udp_size=spec.max_udp_size)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        listen = [Endpoint("127.0.0.1", 0, "127.0.0.1:0")]
        asyncio.run_coroutine_threadsafe(server.start(listen), loop).result(10)
        yield server.addresses[0][1]
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_no_toml_anywhere_and_answers_by_group(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        spec = _spec(tmp_path, upstream.port)
        with _serving(spec) as port:
            pupil_casino = ask(port, "casino.example", source="127.0.1.5")
            staff_casino = ask(port, "www.bets.example", source="127.0.2.5")
            staff_adult = ask(port, "adult.example", source="127.0.2.5", tcp=True)
            other = ask(port, "bets.example", source="127.0.9.9")  # the default group
    assert not list(tmp_path.rglob("*.toml"))
    assert [str(r.rdata) for r in pupil_casino.rr] == ["0.0.0.0"]  # blocked: null answer
    assert staff_casino.header.rcode == dnslib.RCODE.NOERROR
    assert str(staff_casino.rr[0].rdata) != "0.0.0.0"  # allowed for staff: from upstream
    assert [str(r.rdata) for r in staff_adult.rr] == ["0.0.0.0"]
    assert [str(r.rdata) for r in other.rr] == ["0.0.0.0"]
    assert ("www.bets.example", 1, "udp") in [(n.rstrip("."), t, p) for n, t, p in upstream.queries]


def test_spec_settings_reach_the_engine(tmp_path: Path) -> None:
    """blocked_answer and the groups' flags come from the spec, not from any file."""
    with FakeUpstream() as upstream:
        spec = _spec(tmp_path, upstream.port, blocked_answer="nxdomain")
        with _serving(spec) as port:
            reply = ask(port, "casino.example", source="127.0.1.5")
            canary = ask(port, "use-application-dns.net", source="127.0.1.5")
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
    assert canary.header.rcode == dnslib.RCODE.NXDOMAIN  # block_bypass defaults on


def test_dns_config_and_spec_build_the_same_policy(tmp_path: Path) -> None:
    """The Pi's TOML path ends in the same FilterSpec value the engine takes."""
    from agent.dns.config import load_config
    from tests.dns_support import free_dns_port, write_config

    config = load_config(write_config(tmp_path, ["127.0.0.1:9"], free_dns_port()))
    spec = config.spec
    assert spec.groups == config.groups and spec.lists == config.lists
    assert spec.allow_clients == config.server.allow_clients
    assert spec.beacon_site == (config.beacon.site if config.beacon else None)
    _, index, _ = load_index(spec)
    chain = build_chain(spec, index, Forwarder(AnswerCache(0, 0), Upstreams(spec.upstream)),
                        clock=lambda: 0.0)
    expected = ["access", "statutory", "allow", "category", "safesearch", "bypass", "beacon"]
    if spec.rate_limit_qps:
        expected.insert(1, "rate_limit")
    assert [link.name for link in chain.links] == [*expected, "cache", "upstream"]


def test_a_spec_naming_an_unknown_default_group_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default group 'nobody'"):
        _spec(tmp_path, 53, default_group="nobody")


def test_verdict_kinds_are_reported_for_spec_built_engines(tmp_path: Path) -> None:
    """explain-style decisions work on a spec-built chain (the laptop's status uses them)."""
    from agent.filter import packet
    from agent.filter.request import Request
    from agent.filter.verdict import Answer

    spec = _spec(tmp_path, 53)
    _, index, _ = load_index(spec)
    chain = build_chain(spec, index, Forwarder(AnswerCache(0, 0), Upstreams(spec.upstream)),
                        clock=lambda: 0.0)
    wire = dnslib.DNSRecord.question("adult.example", "A").pack()
    request = Request(packet.parse_query(wire), "127.0.2.9", "udp", 0.0)
    _, outcome = chain.decide(request)
    assert isinstance(outcome, Answer)
    assert outcome.verdict.kind is Kind.BLOCKED
    assert outcome.verdict.category == "adult" and outcome.verdict.group == "staff"
