"""DNS over TLS upstreams on persistent, pipelined connections (agent/filter/upstream_streams.py):
a real TLS server on loopback that counts its handshakes, keeps connections open, and can
answer out of order, lie first, or close after a few answers."""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dnslib
import pytest
import uvloop

from agent.filter import packet
from agent.filter.response import Stored
from agent.filter.spec import UpstreamServer, UpstreamSpec
from agent.filter.upstreams import UpstreamError, Upstreams
from tests.dns_support import ask, fake_answer, free_dns_port, running_dns
from tests.test_dns_dot import dot_config, make_cert

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh uvloop loop (the loop the server uses)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_as_coroutine(make))


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


@dataclass
class DotServer:
    """A DoT server on 127.0.0.1: each connection answered until the client closes it (or
    after `close_after` answers); `reverse` answers each burst of queries last first; `lie`
    sends a reply with a wrong ID before each true one."""

    context: ssl.SSLContext
    reverse: bool = False
    lie: bool = False
    close_after: int = 0
    handshakes: int = 0
    accepted: int = 0
    queries: list[str] = field(default_factory=list)
    most_in_flight: int = 0
    port: int = 0

    def serve(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._connection, args=(conn, stop), daemon=True).start()

    def _connection(self, conn: socket.socket, stop: threading.Event) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.handshakes += 1
                tls.settimeout(5)
                answered = 0
                while not stop.is_set():
                    burst = self._burst(tls)
                    if not burst:
                        return
                    self.most_in_flight = max(self.most_in_flight, len(burst))
                    for query in reversed(burst) if self.reverse else burst:
                        request = dnslib.DNSRecord.parse(query)
                        self.queries.append(str(request.q.qname).rstrip("."))
                        reply = bytes(fake_answer(request).pack())
                        if self.lie:
                            liar = struct.pack("!H", request.header.id ^ 0x1234) + reply[2:]
                            tls.sendall(struct.pack("!H", len(liar)) + liar)
                        tls.sendall(struct.pack("!H", len(reply)) + reply)
                        answered += 1
                        if self.close_after and answered >= self.close_after:
                            return
        except (ssl.SSLError, OSError):
            conn.close()  # a client that refused our certificate, or went away

    @staticmethod
    def _burst(tls: ssl.SSLSocket) -> list[bytes]:
        """Every query that arrives without a pause of 50 ms ([] once the client closed)."""
        out: list[bytes] = []
        while True:
            if out and not tls.pending():
                ready, _, _ = select.select([tls], [], [], 0.05)
                if not ready:
                    return out
            head = _read(tls, 2)
            if head is None:
                return out
            body = _read(tls, struct.unpack("!H", head)[0])
            if body is None:
                return out
            out.append(body)


def _read(tls: ssl.SSLSocket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@contextmanager
def dot_server(tmp_path: Path, **options: bool | int) -> Iterator[tuple[DotServer, Path]]:
    """A running DotServer with a certificate for dot.test; yields it and the CA file."""
    cert, key = make_cert(tmp_path, "dot.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = DotServer(context, **options)  # type: ignore[arg-type]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    server.port = listener.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(listener, stop), daemon=True)
    thread.start()
    try:
        yield server, cert
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def dot_spec(port: int, ca: Path, name: str = "dot.test") -> UpstreamSpec:
    server = UpstreamServer("127.0.0.1", port, tls=True, server_name=name, text=f"tls://{port}")
    return UpstreamSpec((server,), timeout_ms=5000, tls_ca=ca)


def first_address(stored: Stored) -> str:
    an, ns, ar = stored.counts
    head = struct.pack("!6H", 0, 0x8180, 1, an, ns, ar)
    message = head + packet.question_bytes("q.example", packet.A, 1) + stored.body
    return str(dnslib.DNSRecord.parse(message).rr[0].rdata)


def test_many_queries_share_one_handshake_and_are_pipelined(tmp_path: Path) -> None:
    with dot_server(tmp_path, reverse=True) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> list[Stored]:
            names = [f"p{i}.example" for i in range(60)]
            first = await asyncio.gather(*(upstreams.ask(n, packet.A, 1, False) for n in names))
            again = [await upstreams.ask(f"s{i}.example", packet.A, 1, False) for i in range(10)]
            upstreams.close()
            return [*first, *again]

        answers = run(lambda: scenario())
    assert [first_address(a) for a in answers] == ["192.0.2.1"] * 70
    assert server.handshakes == 1 and server.accepted == 1
    assert server.most_in_flight > 1  # several queries on the wire at once, answered reversed
    assert upstreams.counters()["upstream_connections_made"] == 1


def test_replies_with_the_wrong_id_are_dropped_and_counted(tmp_path: Path) -> None:
    with dot_server(tmp_path, lie=True) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> list[Stored]:
            answers = [await upstreams.ask(f"l{i}.example", packet.A, 1, False) for i in range(5)]
            upstreams.close()
            return answers

        answers = run(lambda: scenario())
    assert [first_address(a) for a in answers] == ["192.0.2.1"] * 5
    assert upstreams.counters()["upstream_replies_unmatched"] == 5
    assert server.handshakes == 1


def test_a_closed_connection_is_made_again(tmp_path: Path) -> None:
    """The server closes after 3 answers: what was in flight is sent once more on a new
    connection, and nothing is lost."""
    with dot_server(tmp_path, close_after=3) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> list[Stored]:
            answers = []
            for i in range(9):
                answers.append(await upstreams.ask(f"c{i}.example", packet.A, 1, False))
            upstreams.close()
            return answers

        answers = run(lambda: scenario())
    assert [first_address(a) for a in answers] == ["192.0.2.1"] * 9
    assert server.handshakes == 3  # one per three answers, not one per query


def test_a_certificate_for_another_name_fails_and_is_not_retried_per_query(
    tmp_path: Path,
) -> None:
    with dot_server(tmp_path) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca, name="impostor.test"))

        async def scenario() -> list[BaseException | Stored]:
            waits = [upstreams.ask(f"x{i}.example", packet.A, 1, False) for i in range(20)]
            results = await asyncio.gather(*waits, return_exceptions=True)
            upstreams.close()
            return list(results)

        results = run(lambda: scenario())
    assert all(isinstance(r, UpstreamError) for r in results)
    assert server.accepted == 1  # 20 questions waited for one attempt, not 20
    assert server.queries == []


def test_renew_makes_a_new_connection_and_loses_nothing_in_flight(tmp_path: Path) -> None:
    """The laptop moved networks: the connection (bound to the old source address) is closed,
    what was in flight on it goes once more on a new one, from the new network."""
    with dot_server(tmp_path) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> list[Stored]:
            answers = [await upstreams.ask("one.example", packet.A, 1, False)]
            waits = [upstreams.ask(f"r{i}.example", packet.A, 1, False) for i in range(5)]
            await asyncio.sleep(0)  # written on the old connection
            upstreams.renew()
            answers += await asyncio.gather(*waits)
            answers.append(await upstreams.ask("two.example", packet.A, 1, False))
            _, stream = upstreams.carriers(upstreams.config.servers[0])
            assert stream is not None
            resent.append(stream.stats.resent)
            upstreams.close()
            return answers

        resent: list[int] = []
        answers = run(lambda: scenario())
    assert [first_address(a) for a in answers] == ["192.0.2.1"] * 7
    assert server.handshakes == 2
    assert resent == [5]  # the five in flight on the old connection, each sent once more


def test_close_releases_the_connection(tmp_path: Path) -> None:
    with dot_server(tmp_path) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> tuple[int, int]:
            await upstreams.ask("one.example", packet.A, 1, False)
            _, stream = upstreams.carriers(dot_spec(server.port, ca).servers[0])
            assert stream is not None
            opened = len(stream.connections)
            upstreams.close()
            await asyncio.sleep(0)
            return opened, len(stream.connections)

        assert run(lambda: scenario()) == (1, 0)


def test_the_server_through_a_dot_upstream_makes_one_handshake(tmp_path: Path) -> None:
    """hedgerow-dns itself: N client queries, N cache misses, one TLS handshake."""
    with dot_server(tmp_path) as (server, ca):
        port = free_dns_port()
        config = dot_config(tmp_path, port, f"tls://127.0.0.1:{server.port}#dot.test", ca)
        with running_dns(config) as dns:
            replies = [ask(dns.port, f"www{i}.example.org", source="127.0.2.10") for i in range(12)]
    assert [str(r.rr[0].rdata) for r in replies] == ["192.0.2.1"] * 12
    assert server.queries == [f"www{i}.example.org" for i in range(12)]
    assert server.handshakes == 1


@pytest.mark.parametrize("count", [1, 150])
def test_more_than_one_connection_only_when_many_are_in_flight(
    tmp_path: Path, count: int
) -> None:
    with dot_server(tmp_path) as (server, ca):
        upstreams = Upstreams(dot_spec(server.port, ca))

        async def scenario() -> None:
            names = [f"m{i}.example" for i in range(count)]
            await asyncio.gather(*(upstreams.ask(n, packet.A, 1, False) for n in names))
            upstreams.close()

        run(lambda: scenario())
    assert len(server.queries) == count
    assert server.handshakes == (1 if count <= 100 else 2)
