"""Real parts for hedgerow-dns tests: a fake upstream DNS server on loopback (UDP and TCP, in a
thread), the filter running in-process on its own event loop, and small clients."""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dnslib
import uvloop

from agent.dns.service import Service
from tests.services import free_port

SAFE_ADDRESS = "216.239.38.120"
BING_CHAIN = "strict-bing.example"


def fake_answer(request: dnslib.DNSRecord) -> dnslib.DNSRecord:
    """What the fake upstream says: documentation addresses for everything, with a few
    special names for SafeSearch targets, NXDOMAIN, SERVFAIL and big answers."""
    reply = request.reply()
    qname = str(request.q.qname).rstrip(".").lower()
    qtype = request.q.qtype
    label = request.q.qname
    if qname.startswith("nx") or qname.endswith(".invalid"):
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        soa = dnslib.SOA("ns.example.", "hostmaster.example.", (1, 3600, 600, 86400, 30))
        reply.add_auth(dnslib.RR("example.", dnslib.QTYPE.SOA, rdata=soa, ttl=120))
        return reply
    if qname.startswith("servfail"):
        reply.header.rcode = dnslib.RCODE.SERVFAIL
        return reply
    if qname in ("forcesafesearch.google.com", "restrict.youtube.com", "safe.duckduckgo.com"):
        if qtype == dnslib.QTYPE.A:
            reply.add_answer(dnslib.RR(label, qtype, rdata=dnslib.A(SAFE_ADDRESS), ttl=300))
        return reply
    if qname == "restrictmoderate.youtube.com" and qtype == dnslib.QTYPE.A:
        reply.add_answer(dnslib.RR(label, qtype, rdata=dnslib.A("216.239.38.119"), ttl=300))
        return reply
    if qname == "strict.bing.com":
        reply.add_answer(
            dnslib.RR(label, dnslib.QTYPE.CNAME, rdata=dnslib.CNAME(BING_CHAIN + "."), ttl=300)
        )
        if qtype == dnslib.QTYPE.A:
            reply.add_answer(
                dnslib.RR(BING_CHAIN + ".", qtype, rdata=dnslib.A("204.79.197.220"), ttl=300)
            )
        return reply
    if qname.startswith("big") and qtype == dnslib.QTYPE.TXT:
        for i in range(40):
            reply.add_answer(dnslib.RR(label, qtype, rdata=dnslib.TXT("x" * 60 + str(i)), ttl=300))
        return reply
    if qtype == dnslib.QTYPE.A:
        reply.add_answer(dnslib.RR(label, qtype, rdata=dnslib.A("192.0.2.1"), ttl=300))
    elif qtype == dnslib.QTYPE.AAAA:
        reply.add_answer(dnslib.RR(label, qtype, rdata=dnslib.AAAA("2001:db8::1"), ttl=300))
    elif qtype == dnslib.QTYPE.HTTPS:
        reply.add_answer(dnslib.RR(label, dnslib.QTYPE.TXT, rdata=dnslib.TXT("https"), ttl=300))
    return reply


@dataclass
class FakeUpstream:
    """A real DNS server on 127.0.0.1 (UDP and TCP) in a thread. `mode` may be 'answer',
    'silent' (receives, never answers) or 'spoof-first' (a wrong-ID reply before the real one)."""

    mode: str = "answer"
    host: str = "127.0.0.1"
    port: int = 0
    queries: list[tuple[str, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> FakeUpstream:
        # The UDP port must also be free for TCP; another process may hold it: try another.
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((self.host, 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind((self.host, self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self.tcp.listen(16)
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.udp.close()
        self.tcp.close()

    @property
    def address(self) -> str:
        """host:port for a config."""
        return f"{self.host}:{self.port}"

    def count(self, qname: str) -> int:
        """How many times a name was asked."""
        return sum(1 for name, _, _ in self.queries if name == qname)

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        request = dnslib.DNSRecord.parse(data)
        qname = str(request.q.qname).rstrip(".").lower()
        self.queries.append((qname, request.q.qtype, transport))
        if self.mode == "silent":
            return None
        return bytes(fake_answer(request).pack())

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp], [], [], 0.05)
            if not ready:
                continue
            data, peer = self.udp.recvfrom(65535)
            reply = self._answer(data, "udp")
            if reply is None:
                continue
            if self.mode == "spoof-first":
                self.udp.sendto(
                    struct.pack("!H", (reply[0] << 8 | reply[1]) ^ 0xFFFF) + reply[2:], peer
                )
            if len(reply) > 1232:  # too big for UDP: truncate, the resolver must use TCP
                record = dnslib.DNSRecord.parse(reply)
                record.rr = []
                record.header.tc = 1
                reply = record.pack()
            self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    size = struct.unpack("!H", _read(conn, 2))[0]
                    reply = self._answer(_read(conn, size), "tcp")
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except (OSError, struct.error):
                    pass


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


class Clock:
    """A clock tests can set (epoch seconds). `reads` counts the calls: a test can wait for the
    code under test to have looked at the time again (e.g. the list refresh loop's due check)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


@dataclass
class RunningDns:
    """hedgerow-dns serving in this process on a thread with its own uvloop loop."""

    service: Service
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    port: int

    def call(self, coro_factory: Callable[[], object]) -> object:
        """Run a coroutine on the server's loop and wait for its result."""
        coro = coro_factory()
        assert asyncio.iscoroutine(coro)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@contextmanager
def running_dns(
    config: Path,
    clock: Callable[[], float] | None = None,
    sinks: tuple[object, ...] = (),
    **service_options: object,
) -> Iterator[RunningDns]:
    """Start the service from a config file; stop it and its loop afterwards."""
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    kwargs: dict[str, object] = {"sinks": sinks, **service_options}
    if clock is not None:
        kwargs["clock"] = clock
    service = Service(config, **kwargs)  # type: ignore[arg-type]
    try:
        asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
        assert service.loaded is not None
        port = service.loaded.config.server.listen[0].port
        yield RunningDns(service, loop, thread, port)
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def ask(
    port: int,
    name: str,
    qtype: str = "A",
    source: str = "127.0.0.1",
    *,
    host: str = "127.0.0.1",
    edns: int | None = None,
    do: bool = False,
    tcp: bool = False,
) -> dnslib.DNSRecord:
    """One query with dnslib over UDP (or TCP) from a chosen source address."""
    query = dnslib.DNSRecord.question(name, qtype)
    if edns is not None:
        query.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else ""))
    return dnslib.DNSRecord.parse(raw(port, query.pack(), source, host=host, tcp=tcp))


def raw(
    port: int,
    data: bytes,
    source: str = "127.0.0.1",
    *,
    host: str = "127.0.0.1",
    tcp: bool = False,
    timeout: float = 5.0,
) -> bytes:
    """Send raw bytes, return the raw reply (raises TimeoutError if none comes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if tcp:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.bind((source, 0))
            sock.connect((host, port))
            sock.sendall(struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", _read(sock, 2))[0]
            return _read(sock, size)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.sendto(data, (host, port))
        return sock.recv(65535)


def dig(port: int, *args: str, source: str = "127.0.0.1", host: str = "127.0.0.1") -> str:
    """Run the real dig against the server and return its output."""
    command = ["dig", f"@{host}", "-p", str(port), "-b", source, "+tries=1", "+time=5", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def free_dns_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


LISTS = {
    # plain domains
    "gambling.txt": "# gambling\ncasino.example\n*.bets.example\n",
    # hosts format
    "adult.txt": "0.0.0.0 adult.example\n0.0.0.0 www.adult.example\n",
    # adblock format, with an exception
    "social.txt": "! social\n||social.example^\n@@||ok.social.example^\n",
    "iwf.txt": "csam.example\n",
}
# A Wednesday in term, 10:00 local time, and the Saturday after.
WEDNESDAY_10 = 1_700_000_000.0


def term_time() -> float:
    """Epoch seconds of a Wednesday 10:00 local time."""
    import datetime as dt

    return dt.datetime(2024, 1, 17, 10, 0).timestamp()


def saturday() -> float:
    """Epoch seconds of a Saturday 10:00 local time."""
    import datetime as dt

    return dt.datetime(2024, 1, 20, 10, 0).timestamp()


def write_config(
    directory: Path,
    upstreams: list[str],
    port: int,
    *,
    extra: str = "",
    blocked_answer: str = "null",
    rate: int = 0,
    timeout_ms: int = 1500,
    listen: list[str] | None = None,
    udp_batch: int | None = None,
) -> Path:
    """A hedgerow-dns.toml with pupils (127.0.1.0/24), staff (127.0.2.0/24) and lists."""
    lists_dir = directory / "lists"
    lists_dir.mkdir(exist_ok=True)
    for name, text in LISTS.items():
        (lists_dir / name).write_text(text)
    listen = listen or [f"127.0.0.1:{port}"]
    servers = ", ".join(f'"{u}"' for u in upstreams)
    text = f"""
[server]
listen = [{", ".join(f'"{item}"' for item in listen)}]
allow_clients = ["127.0.0.0/9", "::1/128"]
rate_limit_qps = {rate}
{"" if udp_batch is None else f"udp_batch = {udp_batch}"}
list_cache_dir = "{directory / "cache"}"

[upstream]
servers = [{servers}]
timeout_ms = {timeout_ms}

[[lists]]
category = "gambling"
source = "{lists_dir / "gambling.txt"}"
[[lists]]
category = "adult"
source = "{lists_dir / "adult.txt"}"
[[lists]]
category = "social_networks"
source = "{lists_dir / "social.txt"}"
[[lists]]
category = "iwf"
source = "{lists_dir / "iwf.txt"}"
statutory = true

[groups.pupils]
clients = ["127.0.1.0/24", "::1/128"]
block = ["gambling", "adult", "social_networks"]
allow = ["bbc.co.uk", "lucky.casino.example", "csam.example"]
safesearch = true
youtube = "strict"
block_ech = true
schedule = {{ social_networks = "mon-fri 08:00-16:00" }}

[groups.staff]
clients = ["127.0.2.0/24"]
block = ["adult"]
youtube = "moderate"

[default]
group = "pupils"
blocked_answer = "{blocked_answer}"
{extra}
"""
    path = directory / "hedgerow-dns.toml"
    path.write_text(text)
    return path
