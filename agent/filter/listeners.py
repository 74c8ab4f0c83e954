"""The listeners: UDP read one datagram per callback (asyncio's transport) or in batches
(recvmmsg/sendmmsg, mmsg.py), and TCP with several length-prefixed queries per connection.
They only move bytes: whatever answers (DnsServer in server.py) decides and accounts for every
answer, through the Answerer protocol below; the listeners never import it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.filter import mmsg
from agent.filter.fastpath import FastAnswer

log = logging.getLogger(__name__)
_LEN = struct.Struct("!H")
ROUNDS = 8  # batches read per wake-up before other sockets get a turn


class Datagram(Protocol):
    """Where a UDP answer goes: asyncio's transport or a batched socket (mmsg.Datagrams)."""

    def sendto(self, data: bytes, addr: Any, /) -> None: ...

    def is_closing(self) -> bool: ...


class Stream(Protocol):
    """Where a TCP answer goes (TcpProtocol)."""

    def send(self, wire: bytes, /) -> None: ...

    def close(self) -> None: ...


class Answerer(Protocol):
    """What the listeners need from the server that answers: decide, send, account."""

    tcp_idle_timeout_s: float

    def fast_resolver(self) -> Callable[[bytes, str], FastAnswer | bool]:
        """The current chain's fast path (a reload swaps it between two batches)."""
        ...

    def fast(self, data: bytes, client: str) -> FastAnswer | bool:
        """The fast path's answer for one packet, never raising."""
        ...

    def recording(self) -> bool:
        """True if each answer's query and client must be handed on (query records, debug)."""
        ...

    def answered_fast(self, fast: FastAnswer, data: bytes, client: str, started: float) -> None:
        """Account for one fast-path answer already sent."""
        ...

    def answered_batch(
        self, fast: list[FastAnswer], data: list[bytes], clients: list[str], started: float
    ) -> None:
        """Account for a batch of fast-path answers already sent (`data` and `clients` are
        filled only when recording())."""
        ...

    def answer_udp(
        self, data: bytes, client: str, metered: bool, started: float, udp: Datagram, peer: Any
    ) -> None:
        """The full path for a UDP query: answer now, or when its upstream replies."""
        ...

    def answer_tcp(self, message: bytes, client: str, started: float, stream: Stream) -> None:
        """The full path for one query of a TCP connection."""
        ...

    def tcp_opened(self, stream: Stream) -> bool:
        """Count a new TCP connection; False if it must be closed (too many)."""
        ...

    def tcp_closed(self, stream: Stream) -> None:
        """Forget a TCP connection counted by tcp_opened."""
        ...


class UdpProtocol(asyncio.DatagramProtocol):
    """One datagram per event-loop callback (udp_batch = 0, or no recvmmsg)."""

    def __init__(self, server: Answerer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        started = time.perf_counter()
        server = self.server
        client = addr[0]
        fast = server.fast(data, client)
        if self.transport is None:
            return
        if isinstance(fast, tuple):
            self.transport.sendto(fast[0], addr)
            server.answered_fast(fast, data, client, started)
        else:
            server.answer_udp(data, client, fast, started, self.transport, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class BatchedUdp:
    """A UDP listener read with recvmmsg and answered with sendmmsg (mmsg.py): the same
    answers as UdpProtocol, many datagrams per system call."""

    def __init__(self, server: Answerer, datagrams: mmsg.Datagrams) -> None:
        self.server = server
        self.datagrams = datagrams

    def readable(self) -> None:
        """The event loop's reader callback: answer what is waiting, a batch at a time."""
        server = self.server
        datagrams = self.datagrams
        for _ in range(ROUNDS):
            n = datagrams.receive()
            if not n:
                return
            started = time.perf_counter()
            resolve = server.fast_resolver()  # per batch: a reload swaps the chain
            record = server.recording()
            packets = datagrams.packets(n)
            clients = datagrams.clients(n)
            replies: list[tuple[int, bytes]] = []
            answered: list[FastAnswer] = []
            answered_data: list[bytes] = []
            answered_clients: list[str] = []
            try:
                for i in range(n):
                    data = packets[i]
                    client = clients[i]
                    try:
                        fast = resolve(data, client)
                    except Exception:  # never die on one packet: the full path answers it
                        log.exception("fast path failed on a packet from %s", client)
                        fast = False
                    if isinstance(fast, tuple):
                        replies.append((i, fast[0]))
                        answered.append(fast)
                        if record:
                            answered_data.append(data)
                            answered_clients.append(client)
                    else:
                        server.answer_udp(data, client, fast, started, datagrams, datagrams.peer(i))
            finally:
                datagrams.send(replies)  # what was answered goes out even if a packet raised
                if answered:
                    server.answered_batch(answered, answered_data, answered_clients, started)
            if n < datagrams.slots:
                return  # drained: the loop calls again when more arrive


class TcpProtocol(asyncio.Protocol):
    """Several length-prefixed queries per connection; closed when idle."""

    def __init__(self, server: Answerer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.buffer = bytearray()
        self.idle: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        if not self.server.tcp_opened(self):
            log.warning("too many TCP connections; closing one from %s", self.client)
            transport.close()
            return
        self.counted = True
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.server.tcp_idle_timeout_s, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.counted:
            self.server.tcp_closed(self)
            self.counted = False
        self.transport = None

    def send(self, wire: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_LEN.pack(len(wire)) + wire)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._touch()
        buffer = self.buffer
        while len(buffer) >= 2:
            size = _LEN.unpack_from(buffer)[0]
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            self._query(message)

    def _query(self, message: bytes) -> None:
        self.server.answer_tcp(message, self.client, time.perf_counter(), self)
