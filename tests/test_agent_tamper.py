"""The tamper watch against a real filter: the engine (FilterSpec, chain, DnsServer) serving on
port 53 of a loopback address with a self-check key, a resolv.conf in tmp_path pointing at it,
and real UDP servers of our own that lie or stay silent where the OS resolver now points."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dnslib
import pytest
import uvloop

from agent.filter.answer_cache import AnswerCache
from agent.filter.catalog import load_index
from agent.filter.chain import build_chain
from agent.filter.resolvers.forward import Forwarder
from agent.filter.selfcheck import label_of, self_check_address
from agent.filter.server import DnsServer
from agent.filter.spec import Endpoint, FilterSpec, GroupSpec, UpstreamServer, UpstreamSpec
from agent.filter.upstreams import Upstreams
from agent.laptop.resolver.resolvconf import ResolvConf
from agent.laptop.resolver.tamper import TamperResult, TamperWatch
from tests.dns_support import FakeUpstream, ask

KEY = bytes(range(32))


def _spec(tmp_path: Path, upstream_port: int, key: bytes | None) -> FilterSpec:
    return FilterSpec(
        lists=(),
        groups=(GroupSpec("laptop", (ipaddress.ip_network("127.0.0.0/8"),)),),
        default_group="laptop",
        upstream=UpstreamSpec((UpstreamServer("127.0.0.1", upstream_port),), timeout_ms=2000),
        allow_clients=(ipaddress.ip_network("127.0.0.0/8"),),
        list_cache_dir=tmp_path / "cache",
        rate_limit_qps=0,
        self_check_key=key,
    )


def _random_loopback() -> str:
    # Port 53 must be free on it, and other test runs may share this machine: a random one.
    return f"127.{random.randint(64, 250)}.{random.randint(0, 255)}.{random.randint(2, 250)}"


@dataclass
class Filter:
    """The engine serving on port 53 of `host`."""

    host: str
    server: DnsServer
    loop: asyncio.AbstractEventLoop


@contextmanager
def serving(spec: FilterSpec) -> Iterator[Filter]:
    """The engine built from the spec, on port 53 of a random loopback address."""
    _, index, _ = load_index(spec)
    cache = AnswerCache(spec.cache.max_entries, spec.cache.max_ttl_s)
    chain = build_chain(spec, index, Forwarder(cache, Upstreams(spec.upstream)), clock=lambda: 0.0)
    server = DnsServer(chain, max_udp_size=spec.max_udp_size)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        for _ in range(20):
            host = _random_loopback()
            listen = [Endpoint(host, 53, f"{host}:53")]
            try:
                asyncio.run_coroutine_threadsafe(server.start(listen), loop).result(10)
                break
            except OSError:
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        else:
            raise RuntimeError("no loopback address with port 53 free")
        yield Filter(host, server, loop)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class OtherServer:
    """A real UDP DNS server on port 53 of a loopback address: 'lie' answers every A with
    127.0.0.1 (what a resolver that is not ours might say), 'silent' never answers."""

    mode: str
    host: str = ""
    asked: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> OtherServer:
        for _ in range(20):
            self.host = _random_loopback()
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.host, 53))
                break
            except OSError:
                self.sock.close()
        else:
            raise RuntimeError("no loopback address with port 53 free")
        self.sock.settimeout(0.05)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = dnslib.DNSRecord.parse(data)
            self.asked.append(str(request.q.qname).rstrip("."))
            if self.mode == "silent":
                continue
            reply = request.reply()
            reply.add_answer(dnslib.RR(request.q.qname, rdata=dnslib.A("127.0.0.1"), ttl=0))
            self.sock.sendto(reply.pack(), peer)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Filter]:
    spec = _spec(tmp_path_factory.mktemp("filter"), upstream.port, KEY)
    with serving(spec) as running:
        yield running


def _resolver(tmp_path: Path, nameserver: str) -> ResolvConf:
    path = tmp_path / "resolv.conf"
    path.write_text(f"# from DHCP\nsearch home.example\nnameserver {nameserver}\n")
    return ResolvConf(path, state_dir=tmp_path / "state")


def _check(watch: TamperWatch) -> TamperResult:
    return asyncio.run(watch.check())


def test_self_check_name_answered_from_the_key_and_never_forwarded(
    ours: Filter, upstream: FakeUpstream
) -> None:
    label = secrets.token_hex(10)
    name = f"{label}.self.hedgerow.internal"
    reply = ask(53, name, host=ours.host)
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [(self_check_address(KEY, label), 0)]
    assert self_check_address(KEY, label).startswith("127.")
    assert ask(53, name, "AAAA", host=ours.host).rr == []
    assert dnslib.RCODE.get(ask(53, name, "AAAA", host=ours.host).header.rcode) == "NOERROR"
    # Not a self-check label (too short, not only [a-z0-9], two labels): NXDOMAIN.
    for bad in ("a" * 15, "hyphen-in-the-label", f"{label}.{label}"):
        reply = ask(53, f"{bad}.self.hedgerow.internal", host=ours.host)
        assert dnslib.RCODE.get(reply.header.rcode) == "NXDOMAIN", bad
    assert not [q for q in upstream.queries if q[0].endswith("hedgerow.internal")]


def test_without_the_key_the_self_check_name_is_nxdomain(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with serving(_spec(tmp_path, upstream.port, None)) as running:
        reply = ask(53, f"{'a' * 16}.self.hedgerow.internal", host=running.host)
        assert dnslib.RCODE.get(reply.header.rcode) == "NXDOMAIN"
        watch = TamperWatch(KEY, _resolver(tmp_path, running.host), timeout_s=5)
        result = _check(watch)
    assert not result.ok
    assert "rcode 3" in result.detail


def test_ours_then_rewritten_to_a_liar_then_put_back(tmp_path: Path, ours: Filter) -> None:
    resolver = _resolver(tmp_path, "192.0.2.53")
    resolver.apply(ours.host, 53)
    watch = TamperWatch(KEY, resolver, timeout_s=5)
    assert _check(watch) == TamperResult(
        True, "ours", f"our filter answered through {ours.host}:53"
    )

    with OtherServer("lie") as liar:
        # NetworkManager (or a user) rewrites the file behind our back.
        resolver.path.write_text(f"nameserver {liar.host}\n")
        result = _check(watch)
        assert not result.ok
        assert result.seen == liar.host
        assert "answered 127.0.0.1, not our filter's address" in result.detail
        assert len(liar.asked) == 1 and liar.asked[0].endswith(".self.hedgerow.internal")
        # What the service does next: apply again; the check passes.
        assert resolver.apply(ours.host, 53)
        assert _check(watch).ok
        assert len(liar.asked) == 1


def test_a_fresh_label_every_time(tmp_path: Path) -> None:
    with OtherServer("lie") as liar:
        watch = TamperWatch(KEY, _resolver(tmp_path, liar.host), timeout_s=5)
        assert not _check(watch).ok
        assert not _check(watch).ok
    assert len(liar.asked) == 2 and liar.asked[0] != liar.asked[1]


def test_a_filter_with_another_key_is_not_ours(tmp_path: Path, upstream: FakeUpstream) -> None:
    with serving(_spec(tmp_path, upstream.port, b"someone else's key")) as other:
        watch = TamperWatch(KEY, _resolver(tmp_path, other.host), timeout_s=5)
        result = _check(watch)
    assert not result.ok and "not our filter's address" in result.detail


def test_silent_server_is_not_ours(tmp_path: Path) -> None:
    with OtherServer("silent") as silent:
        watch = TamperWatch(KEY, _resolver(tmp_path, silent.host), timeout_s=0.3)
        result = _check(watch)
        assert len(silent.asked) == 1
    assert not result.ok
    assert result.seen == silent.host
    assert result.detail == f"no answer from {silent.host}:53 within 0.3 s"


def test_nothing_listening_is_not_ours(tmp_path: Path) -> None:
    host = _random_loopback()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))  # the address works; nothing listens on its port 53
    resolver = _resolver(tmp_path, host)
    result = _check(TamperWatch(KEY, resolver, timeout_s=5))
    assert not result.ok
    assert result.seen == host
    # Connected UDP: the port-unreachable error arrives at once instead of a timeout.
    assert result.detail.startswith(f"cannot ask {host}:53")


def test_judged_by_the_answer_not_by_the_file(tmp_path: Path, ours: Filter) -> None:
    """A file that names our filter but that we did not write still passes the check; the
    adapter calls the setting "ours" only once it applied it."""
    resolver = _resolver(tmp_path, ours.host)
    watch = TamperWatch(KEY, resolver, timeout_s=5)
    assert _check(watch).ok
    assert resolver.current() == ours.host  # not applied yet: what the file names
    resolver.apply(ours.host, 53)
    assert resolver.current() == "ours"
    assert _check(watch).ok


def test_the_fast_path_hands_self_check_names_to_the_full_chain(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 9, KEY)
    _, index, _ = load_index(spec)
    cache = AnswerCache(10, 60)
    chain = build_chain(spec, index, Forwarder(cache, Upstreams(spec.upstream)), clock=lambda: 0.0)
    query = dnslib.DNSRecord.question(f"{'b' * 20}.self.hedgerow.internal", "A").pack()
    assert chain.resolve_fast(bytes(query), "127.0.0.1") is True


@pytest.mark.parametrize(
    ("qname", "label"),
    [
        ("a" * 16 + ".self.hedgerow.internal", "a" * 16),
        ("0123456789abcdef0123.self.hedgerow.internal", "0123456789abcdef0123"),
        ("z" * 63 + ".self.hedgerow.internal", "z" * 63),
        ("a" * 15 + ".self.hedgerow.internal", None),
        ("a" * 64 + ".self.hedgerow.internal", None),
        ("a" * 16 + ".x.self.hedgerow.internal", None),
        ("a" * 16 + ".beacon.hedgerow.internal", None),
        ("self.hedgerow.internal", None),
    ],
)
def test_label_of(qname: str, label: str | None) -> None:
    assert label_of(qname) == label


def test_self_check_address_depends_on_key_and_label() -> None:
    one = self_check_address(KEY, "a" * 16)
    assert one == self_check_address(KEY, "a" * 16)
    assert ipaddress.ip_address(one) in ipaddress.ip_network("127.0.0.0/8")
    assert one != self_check_address(KEY, "b" * 16)
    assert one != self_check_address(b"another key", "a" * 16)


def test_the_key_never_shows_in_a_logged_spec(tmp_path: Path) -> None:
    assert repr(KEY) not in repr(_spec(tmp_path, 9, KEY))
