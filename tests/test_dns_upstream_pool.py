"""The upstream UDP pool (agent/filter/upstream_pool.py) through Upstreams, against real UDP
servers on loopback: answers matched by ID and question, spoofed replies dropped and counted,
random IDs, rotated sockets, batched sends, failover on timeout and on a refused port, TCP on
truncation, and no asyncio task per query."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dnslib
import pytest
import uvloop

from agent.filter import mmsg, packet
from agent.filter.response import Stored
from agent.filter.spec import UpstreamServer, UpstreamSpec
from agent.filter.upstream_pool import QUERIES_PER_SOCKET, SOCKETS
from agent.filter.upstreams import UpstreamError, Upstreams
from tests.dns_support import (
    FakeUpstream,
    ask,
    fake_answer,
    free_dns_port,
    running_dns,
    write_config,
)

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh uvloop loop (the loop the server uses)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_as_coroutine(make))


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def spec(*servers: int | str, timeout_ms: int = 1500) -> UpstreamSpec:
    """Plain upstreams on 127.0.0.1 ports (or host:port text)."""
    parsed = []
    for server in servers:
        if isinstance(server, int):
            parsed.append(UpstreamServer("127.0.0.1", server, text=f"127.0.0.1:{server}"))
        else:
            host, port = server.rsplit(":", 1)
            parsed.append(UpstreamServer(host, int(port), text=server))
    return UpstreamSpec(tuple(parsed), timeout_ms=timeout_ms)


def address_of(stored: Stored) -> str:
    """The first answer record's data (the records follow a question we need not repeat)."""
    an, ns, ar = stored.counts
    head = struct.pack("!6H", 0, 0x8180, 1, an, ns, ar)
    message = head + packet.question_bytes("q.example", packet.A, 1) + stored.body
    return str(dnslib.DNSRecord.parse(message).rr[0].rdata)


class Recording:
    """A UDP server in a thread that answers like the fake upstream and records each query's
    ID and source port; `lies` replies are sent before each true one."""

    def __init__(
        self,
        lies: Callable[[bytes, bytes], list[bytes]] | None = None,
        unanswered: frozenset[str] = frozenset(),
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.lies = lies
        self.unanswered = unanswered  # names recorded but never answered
        self.seen: list[tuple[int, int, str]] = []  # (id, source port, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if not ready:
                continue
            data, peer = self.sock.recvfrom(65535)
            request = dnslib.DNSRecord.parse(data)
            name = str(request.q.qname).rstrip(".")
            self.seen.append((request.header.id, peer[1], name))
            if name in self.unanswered:
                continue
            reply = bytes(fake_answer(request).pack())
            for lie in self.lies(data, reply) if self.lies else []:
                self.sock.sendto(lie, peer)
            self.sock.sendto(reply, peer)


@contextmanager
def recording(
    lies: Callable[[bytes, bytes], list[bytes]] | None = None,
    unanswered: frozenset[str] = frozenset(),
) -> Iterator[Recording]:
    server = Recording(lies, unanswered)
    server._thread.start()
    try:
        yield server
    finally:
        server._stop.set()
        server._thread.join(5)
        server.sock.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_questions_at_once_share_few_sockets_and_batched_sends() -> None:
    with recording() as server:
        upstreams = Upstreams(spec(server.port))
        names = [f"n{i}.example" for i in range(150)]  # more could overflow the server's buffer

        async def scenario() -> list[Stored]:
            answers = await asyncio.gather(*(upstreams.ask(n, packet.A, 1, False) for n in names))
            upstreams.close()
            return list(answers)

        answers = run(lambda: scenario())
    assert [address_of(a) for a in answers] == ["192.0.2.1"] * len(names)
    counters = upstreams.counters()
    assert counters["upstream_queries_sent"] == len(names)
    assert counters["upstream_replies_unmatched"] == 0
    # 300 questions asked in one event-loop turn leave in batches, not one call each.
    if mmsg.available():
        assert counters["upstream_send_calls"] < len(names) / 4
    ports = {port for _, port, _ in server.seen}
    assert len(ports) <= 2 * SOCKETS


def test_spoofed_and_mismatched_replies_are_dropped_and_counted() -> None:
    def lies(query: bytes, reply: bytes) -> list[bytes]:
        wrong_id = bytes((query[0] ^ 0x5A, query[1])) + reply[2:]
        other = dnslib.DNSRecord.parse(reply)
        other.q.qname = dnslib.DNSLabel("evil.example")
        other.rr = [dnslib.RR("evil.example", rdata=dnslib.A("203.0.113.66"), ttl=300)]
        not_a_reply = query  # our own query echoed: QR not set
        return [wrong_id, bytes(other.pack()), not_a_reply, b"\x00"]

    with recording(lies) as server:
        upstreams = Upstreams(spec(server.port))

        async def scenario() -> list[Stored]:
            answers = [await upstreams.ask(f"bank{i}.example", packet.A, 1, False) for i in range(5)]
            upstreams.close()
            return answers

        answers = run(lambda: scenario())
    assert [address_of(a) for a in answers] == ["192.0.2.1"] * 5
    assert upstreams.counters()["upstream_replies_unmatched"] == 4 * 5


def test_ids_are_random_and_sockets_rotate() -> None:
    count = QUERIES_PER_SOCKET * 3
    with recording() as server:
        upstreams = Upstreams(spec(server.port))

        async def scenario() -> None:
            for start in range(0, count, 64):  # several event-loop turns of queries
                batch = range(start, min(count, start + 64))
                await asyncio.gather(
                    *(upstreams.ask(f"r{i}.example", packet.A, 1, False) for i in batch)
                )
            upstreams.close()

        run(lambda: scenario())
    ids = [msg_id for msg_id, _, _ in server.seen]
    assert len(ids) == count
    assert len(set(ids)) > count * 0.95  # 16 random bits: few repeats among 768
    assert sorted(ids) != ids  # not a counter
    by_port: dict[int, int] = {}
    for _, port, _ in server.seen:
        by_port[port] = by_port.get(port, 0) + 1
    assert max(by_port.values()) <= QUERIES_PER_SOCKET  # each socket retired at its quota
    assert len(by_port) >= count // QUERIES_PER_SOCKET
    assert upstreams.counters()["upstream_sockets_opened"] == len(by_port)


def test_identical_questions_in_flight_share_one_query() -> None:
    with recording() as server:
        upstreams = Upstreams(spec(server.port))

        async def scenario() -> list[Stored]:
            waits = [upstreams.ask("same.example", packet.A, 1, False) for _ in range(10)]
            answers = list(await asyncio.gather(*waits))
            upstreams.close()
            return answers

        answers = run(lambda: scenario())
    assert len(answers) == 10 and len({id(a) for a in answers}) == 1
    assert [name for _, _, name in server.seen] == ["same.example"]


def test_a_cancelled_waiter_leaves_the_others_their_answer() -> None:
    with recording() as server:
        upstreams = Upstreams(spec(server.port))

        async def scenario() -> Stored:
            first = upstreams.ask("shared.example", packet.A, 1, False)
            second = upstreams.ask("shared.example", packet.A, 1, False)
            first.cancel()
            answer = await second
            upstreams.close()
            return answer

        assert address_of(run(lambda: scenario())) == "192.0.2.1"


def test_timeout_moves_to_the_next_server_and_no_task_per_query() -> None:
    errors: list[tuple[str, str]] = []
    with FakeUpstream(mode="silent") as dead, FakeUpstream() as alive:
        upstreams = Upstreams(
            spec(dead.address, alive.address, timeout_ms=2000),
            lambda server, reason: errors.append((server, reason)),
        )

        async def scenario() -> tuple[list[Stored], int]:
            before = len(asyncio.all_tasks())
            waits = [upstreams.ask(f"t{i}.example", packet.A, 1, False) for i in range(50)]
            await asyncio.sleep(0)
            tasks = len(asyncio.all_tasks()) - before  # while all 50 wait on the dead server
            answers = list(await asyncio.gather(*waits))
            upstreams.close()
            return answers, tasks

        answers, tasks = run(lambda: scenario())
        assert tasks == 0
        assert [address_of(a) for a in answers] == ["192.0.2.1"] * 50
        assert dead.count("t7.example") == 1 and alive.count("t7.example") == 1
    assert errors == [(dead.address, "timeout")] * 50


def test_a_socket_whose_query_timed_out_takes_no_more() -> None:
    """A connected socket keeps the source address it was given: on a laptop that moved to
    another network its answers are lost, so after one timeout it takes no more queries."""
    with recording(unanswered=frozenset({"lost.example"})) as server:
        upstreams = Upstreams(spec(server.port, timeout_ms=300))

        async def scenario() -> None:
            for i in range(SOCKETS):  # one turn each: the pool's sockets all open
                await upstreams.ask(f"open{i}.example", packet.A, 1, False)
            with pytest.raises(UpstreamError):
                await upstreams.ask("lost.example", packet.A, 1, False)
            for i in range(40):  # each turn picks one of the open sockets at random
                await upstreams.ask(f"next{i}.example", packet.A, 1, False)
            upstreams.close()

        run(lambda: scenario())
    lost = next(port for _, port, name in server.seen if name == "lost.example")
    later = {port for _, port, name in server.seen if name.startswith("next")}
    assert lost not in later, server.seen
    assert upstreams.counters()["upstream_sockets_opened"] == SOCKETS + 1


def test_renew_moves_new_questions_to_new_sockets() -> None:
    """What the laptop agent calls when its network changes: a question already queued is
    still answered on its old socket; every later one leaves on a new socket, and the old ones
    close once drained."""
    with recording() as server:
        upstreams = Upstreams(spec(server.port))

        async def scenario() -> list[Stored]:
            answers = [
                await upstreams.ask(f"old{i}.example", packet.A, 1, False) for i in range(SOCKETS)
            ]
            queued = upstreams.ask("queued.example", packet.A, 1, False)  # leaves this turn
            upstreams.renew()
            answers.append(await queued)
            for i in range(20):
                answers.append(await upstreams.ask(f"new{i}.example", packet.A, 1, False))
            pool, _ = upstreams.carriers(upstreams.config.servers[0])
            assert pool is not None and len(pool.sockets) <= SOCKETS  # the old ones closed
            upstreams.close()
            return answers

        answers = run(lambda: scenario())
    assert [address_of(a) for a in answers] == ["192.0.2.1"] * (SOCKETS + 21)
    old = {port for _, port, name in server.seen if not name.startswith("new")}
    new = {port for _, port, name in server.seen if name.startswith("new")}
    assert old and new and not old & new, server.seen


def test_a_refused_port_fails_over_at_once() -> None:
    errors: list[str] = []
    closed = free_dns_port()  # nothing listens: ICMP port unreachable, ECONNREFUSED
    with FakeUpstream() as alive:
        # A timeout far beyond the test's patience: only the refusal can move it on in time.
        upstreams = Upstreams(
            spec(closed, alive.address, timeout_ms=120_000),
            lambda server, reason: errors.append(reason),
        )

        async def scenario() -> Stored:
            answer = await asyncio.wait_for(upstreams.ask("r.example", packet.A, 1, False), 30)
            upstreams.close()
            return answer

        assert address_of(run(lambda: scenario())) == "192.0.2.1"
    assert errors == ["ConnectionRefusedError"]


def test_all_servers_failing_raises_upstream_error() -> None:
    with FakeUpstream(mode="silent") as dead:
        upstreams = Upstreams(spec(dead.address, timeout_ms=200))

        async def scenario() -> None:
            try:
                with pytest.raises(UpstreamError, match="last: timeout"):
                    await upstreams.ask("gone.example", packet.A, 1, False)
            finally:
                upstreams.close()

        run(lambda: scenario())


def test_truncated_answer_is_asked_again_over_tcp() -> None:
    with FakeUpstream() as upstream:
        upstreams = Upstreams(spec(upstream.address))

        async def scenario() -> Stored:
            answer = await upstreams.ask("big.example", packet.TXT, 1, False)
            upstreams.close()
            return answer

        stored = run(lambda: scenario())
        assert stored.counts[0] == 40 and not stored.truncated
        assert [t for name, _, t in upstream.queries if name == "big.example"] == ["udp", "tcp"]


def test_close_fails_what_is_in_flight_and_releases_every_socket() -> None:
    with FakeUpstream(mode="silent") as dead:
        upstreams = Upstreams(spec(dead.address, timeout_ms=60_000))

        async def scenario() -> tuple[int, int]:
            before = _open_fds()
            waits = [upstreams.ask(f"c{i}.example", packet.A, 1, False) for i in range(40)]
            await asyncio.sleep(0.05)
            assert _open_fds() > before
            upstreams.close()
            results = await asyncio.gather(*waits, return_exceptions=True)
            assert all(isinstance(r, UpstreamError) for r in results)
            return before, _open_fds()

        before, after = run(lambda: scenario())
        assert after == before


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_late_answers_of_one_loop_turn_reach_their_senders(
    family: socket.AddressFamily, host: str
) -> None:
    """mmsg.Datagrams.sendto on a running loop: gathered, then sent in one sendmmsg."""
    if not mmsg.available():
        pytest.fail("this test needs recvmmsg/sendmmsg (Linux)")
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    datagrams = mmsg.Datagrams(server, slots=4, size=512)
    senders = []
    for _ in range(6):  # more than the 4 slots: two batches
        sender = socket.socket(family, socket.SOCK_DGRAM)
        sender.bind((host, 0))
        sender.settimeout(5)
        senders.append(sender)
    try:
        for k, sender in enumerate(senders):
            sender.sendto(b"q%d" % k, server.getsockname())
        peers: dict[int, tuple[object, ...]] = {}  # sender's port -> peer as receive() saw it
        for _ in range(500):
            n = datagrams.receive()
            peers.update((datagrams.peer(i)[1], datagrams.peer(i)) for i in range(n))
            if len(peers) == len(senders):
                break
        assert len(peers) == len(senders)

        async def answer_late() -> None:
            for k, sender in enumerate(senders):
                port = sender.getsockname()[1]
                datagrams.sendto(b"answer %d" % k, peers[port])
            await asyncio.sleep(0)

        run(lambda: answer_late())
        assert [s.recvfrom(64)[0] for s in senders] == [b"answer %d" % k for k in range(6)]
        assert datagrams.dropped == 0
    finally:
        datagrams.close()
        for sender in senders:
            sender.close()


def test_the_server_counts_spoofed_replies_in_its_metrics(tmp_path: Path) -> None:
    """hedgerow-dns itself: a wrong-ID reply before each true one is dropped, the true one
    answers, and /metrics counts what was dropped."""
    with FakeUpstream(mode="spoof-first") as liar:
        path = write_config(tmp_path, [liar.address], free_dns_port())
        with running_dns(path) as dns:
            replies = [ask(dns.port, f"w{i}.example.com", "A", "127.0.2.7") for i in range(3)]
            metrics = dns.service.metrics
            assert metrics is not None
            unmatched = metrics.value("hedgerow_dns_upstream_replies_unmatched")
            sent = metrics.value("hedgerow_dns_upstream_queries_sent")
    assert [str(r.rr[0].rdata) for r in replies] == ["192.0.2.1"] * 3
    assert (unmatched, sent) == (3, 3)
