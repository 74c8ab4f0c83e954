"""Batched UDP (agent/filter/mmsg.py) on real loopback sockets: what recvmmsg takes is what was
sent, from whom, and answers reach the right sender; and the server uses it by default."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest

from agent.filter import mmsg
from tests.dns_support import FakeUpstream, ask, free_dns_port, running_dns, write_config

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="recvmmsg is Linux-only")


def bound(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, 0))
    return sock


def receive_all(datagrams: mmsg.Datagrams, expected: int) -> list[tuple[bytes, str, tuple]]:  # type: ignore[type-arg]
    """Everything waiting, batch after batch, as (data, client, peer) per datagram."""
    got: list[tuple[bytes, str, tuple]] = []  # type: ignore[type-arg]
    deadline = time.monotonic() + 10
    while len(got) < expected and time.monotonic() < deadline:
        n = datagrams.receive()
        peers = [datagrams.peer(i) for i in range(n)]
        got += zip(datagrams.packets(n), datagrams.clients(n), peers, strict=True)
        if not n:
            time.sleep(0.01)
    return got


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[mmsg.Datagrams, list[socket.socket]]]:
    family, host = request.param
    datagrams = mmsg.Datagrams(bound(family, host), slots=8, size=512)
    senders = [bound(family, host) for _ in range(3)]
    for sender in senders:
        sender.settimeout(5)
    yield datagrams, senders
    datagrams.close()
    for sender in senders:
        sender.close()


def test_batches_keep_each_datagram_and_its_sender(
    pair: tuple[mmsg.Datagrams, list[socket.socket]],
) -> None:
    datagrams, senders = pair
    server = datagrams.sock.getsockname()
    sent = []
    for k in range(20):  # more than the 8 slots: several batches
        sender = senders[k % 3]
        payload = f"query {k} ".encode() * (k + 1)
        sender.sendto(payload, server)
        sent.append((payload, sender.getsockname()))
    got = receive_all(datagrams, 20)
    assert [g[0] for g in got] == [s[0] for s in sent]
    for (_, client, peer), (_, source) in zip(got, sent, strict=True):
        assert client == source[0]
        assert peer[:2] == source[:2]


def test_replies_go_to_their_senders_in_one_flush(
    pair: tuple[mmsg.Datagrams, list[socket.socket]],
) -> None:
    datagrams, senders = pair
    server = datagrams.sock.getsockname()
    for k, sender in enumerate(senders):
        sender.sendto(b"ping %d" % k, server)
    n = 0
    deadline = time.monotonic() + 10
    while n < 3 and time.monotonic() < deadline:
        n = datagrams.receive() or n
    assert n == 3
    # Answer in reverse, and only the first two: slot order and sender must not get mixed.
    packets = datagrams.packets(n)
    datagrams.send([(1, b"pong " + packets[1]), (0, b"pong " + packets[0])])
    assert senders[0].recvfrom(512) == (b"pong ping 0", server)
    assert senders[1].recvfrom(512) == (b"pong ping 1", server)
    senders[2].settimeout(0.2)
    with pytest.raises(TimeoutError):
        senders[2].recvfrom(512)


def test_oversized_datagram_and_reply(pair: tuple[mmsg.Datagrams, list[socket.socket]]) -> None:
    datagrams, senders = pair
    server = datagrams.sock.getsockname()
    senders[0].sendto(b"x" * 2000, server)  # slots hold 512 bytes
    got = receive_all(datagrams, 1)
    assert got[0][0] == b"x" * 512
    assert datagrams.truncated == 1
    datagrams.receive()  # nothing more waiting
    senders[0].sendto(b"y", server)
    assert receive_all(datagrams, 1)[0][0] == b"y"
    datagrams.send([(0, b"z" * 1500)])  # larger than a slot: sent on its own, whole
    assert senders[0].recvfrom(4096)[0] == b"z" * 1500


def test_nothing_waiting_and_closed_socket(
    pair: tuple[mmsg.Datagrams, list[socket.socket]],
) -> None:
    datagrams, senders = pair
    assert datagrams.receive() == 0
    datagrams.send([])  # nothing to answer: nothing sent, nothing counted
    assert datagrams.dropped == 0
    datagrams.close()
    assert datagrams.is_closing()
    datagrams.sendto(b"late", senders[0].getsockname())  # an answer after close: ignored
    assert datagrams.receive() == 0  # a closed descriptor: no datagrams, no exception


def test_unsendable_answer_is_counted_not_raised() -> None:
    told: list[str] = []
    sock = bound(socket.AF_INET, "127.0.0.1")
    datagrams = mmsg.Datagrams(sock, slots=4, size=512, unsent=lambda: told.append("unsent"))
    try:
        datagrams.sendto(b"x" * 70_000, ("127.0.0.1", 9))  # too long for any datagram
        assert datagrams.dropped == 1
        assert told == ["unsent"]
    finally:
        datagrams.close()


def test_server_uses_batched_udp_unless_turned_off(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        for batch, expected in ((32, "batched"), (0, "plain")):
            port = free_dns_port()
            directory = tmp_path / expected
            directory.mkdir()
            path = write_config(directory, [upstream.address], port, udp_batch=batch)
            with running_dns(path) as dns:
                server = dns.service.server
                assert server is not None
                assert bool(server._batched) == (expected == "batched")
                assert bool(server._udp) == (expected == "plain")
                assert server.addresses == [("127.0.0.1", port)]
                for _ in range(3):
                    reply = ask(port, "casino.example", source="127.0.1.5")
                    assert [str(rr.rdata) for rr in reply.rr] == ["0.0.0.0"]
                    assert reply.header.rcode == dnslib.RCODE.NOERROR
                metrics = dns.service.metrics
                assert metrics is not None
                blocked = [n for (kind, *_), n in metrics.answers.items() if kind == "blocked"]
                assert blocked == [3]  # every answer counted once, whichever listener
                assert sum(metrics.latency[:-1]) == 3  # and timed once


def test_one_refused_answer_in_a_batch_does_not_stop_the_others(
    pair: tuple[mmsg.Datagrams, list[socket.socket]],
) -> None:
    datagrams, senders = pair
    server = datagrams.sock.getsockname()
    senders[0].sendto(b"hello", server)
    assert len(receive_all(datagrams, 1)) == 1
    # Slot 3 never held a datagram: its source address is all zeros, which the kernel refuses.
    datagrams.send([(0, b"first"), (3, b"nowhere"), (0, b"second")])
    assert datagrams.dropped == 1
    assert senders[0].recvfrom(512)[0] == b"first"
    assert senders[0].recvfrom(512)[0] == b"second"
