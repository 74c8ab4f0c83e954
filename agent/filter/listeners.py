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
from agent.filter.fastpath import FastAnswer, FastResult, Miss

log = logging.getLogger(__name__)
_LEN = struct.Struct("!H")
ROUNDS = 8  # batches read per wake-up before other sockets get a turn
IN_FLIGHT = 16  # queries of one TCP connection being answered at once
WRITE_HIGH = 16 * 1024  # unsent answer bytes above which a TCP connection is not read
WRITE_CAP = 256 * 1024  # an answer that would take the unsent bytes past this closes it


class Datagram(Protocol):
    """Where a UDP answer goes: asyncio's transport or a batched socket (mmsg.Datagrams)."""

    def sendto(self, data: bytes, addr: Any, /) -> None: ...

    def is_closing(self) -> bool: ...


class Stream(Protocol):
    """Where a TCP answer goes (TcpProtocol)."""

    client: str
    in_flight: int  # its queries being answered

    def send(self, wire: bytes, /) -> None: ...

    def unanswered(self) -> None:
        """A query of this connection that gets no answer (a response, or too short)."""
        ...

    def close(self) -> None: ...


class Answerer(Protocol):
    """What the listeners need from the server that answers: decide, send, account."""

    tcp_idle_timeout_s: float
    tcp_message_timeout_s: float

    def fast_resolver(self) -> Callable[[bytes, str], FastResult]:
        """The current chain's fast path (a reload swaps it between two batches)."""
        ...

    def fast(self, data: bytes, client: str) -> FastResult:
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

    def answer_miss(
        self, miss: Miss, data: bytes, client: str, started: float, udp: Datagram, peer: Any
    ) -> None:
        """A UDP cache miss the fast path let through: fetch it, answer when it comes."""
        ...

    def answer_tcp(self, message: bytes, client: str, started: float, stream: Stream) -> None:
        """The full path for one query of a TCP connection."""
        ...

    def tcp_opened(self, stream: Stream) -> bool:
        """Count a new TCP connection (making room for it); False if it must be closed."""
        ...

    def tcp_active(self, stream: Stream) -> None:
        """A whole query came in or an answer went out on this connection."""
        ...

    def tcp_closed(self, stream: Stream) -> None:
        """Forget a TCP connection counted by tcp_opened."""
        ...

    def tcp_event(self, event: str) -> None:
        """Count a TCP connection closed (idle, slow, overflow) or paused for backpressure."""
        ...


def _partial(buffer: bytearray) -> bool:
    """True if the buffer holds the start of a TCP message but not all of it."""
    return bool(buffer) and (len(buffer) < 2 or len(buffer) < 2 + _LEN.unpack_from(buffer)[0])


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
        elif isinstance(fast, bool):
            server.answer_udp(data, client, fast, started, self.transport, addr)
        else:
            server.answer_miss(fast, data, client, started, self.transport, addr)

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
                    elif isinstance(fast, bool):
                        server.answer_udp(
                            data, client, fast, started, datagrams, datagrams.source(i)
                        )
                    else:  # a cache miss: its answer leaves in a later sendmmsg
                        server.answer_miss(
                            fast, data, client, started, datagrams, datagrams.source(i)
                        )
            finally:
                datagrams.send(replies)  # what was answered goes out even if a packet raised
                if answered:
                    server.answered_batch(answered, answered_data, answered_clients, started)
            if n < datagrams.slots:
                return  # drained: the loop calls again when more arrive


class TcpProtocol(asyncio.Protocol):
    """Several length-prefixed queries per connection (RFC 7766), held to bounds a client
    cannot stretch: at most IN_FLIGHT queries being answered and WRITE_HIGH bytes of answers
    unsent before reading stops (a client that never reads costs us that, not the answers to
    everything it sent), a deadline per message that further bytes do not move (a byte every
    few seconds holds nothing), and closed when idle."""

    def __init__(self, server: Answerer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client = ""
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False
        self.in_flight = 0  # queries handed to the server and not yet answered
        self.writing_paused = False  # the transport's write buffer is over WRITE_HIGH
        self.reading_paused = False
        self.draining = False
        self.active = 0.0  # loop time of the last whole query in or answer out
        self.message_deadline = 0.0  # loop time the partial message must be whole by; 0: none

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.active = self.loop.time()
        if not self.server.tcp_opened(self):
            transport.close()
            return
        self.counted = True
        self._arm(self.active + self.server.tcp_idle_timeout_s)

    def _arm(self, at: float) -> None:
        # One timer per connection, moved only when a deadline comes earlier than it; when
        # it fires, _expire works out the real deadline and re-arms (no handle per message).
        timer = self.timer
        if timer is not None:
            if timer.when() <= at:
                return
            timer.cancel()
        assert self.loop is not None
        self.timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self.timer = None
        if self.transport is None or self.loop is None:
            return
        now = self.loop.time()
        if self.message_deadline and not self.reading_paused:
            due, reason = self.message_deadline, "slow"
        elif self.in_flight and not self.writing_paused:
            due, reason = now + self.server.tcp_idle_timeout_s, "idle"  # waiting upstream
        else:
            due, reason = self.active + self.server.tcp_idle_timeout_s, "idle"
        if now >= due:
            self.server.tcp_event(reason)
            self.close()
        else:
            self._arm(due)

    def close(self) -> None:
        """Close now; answers the client has not read are dropped rather than waited for."""
        if self.counted:
            self.counted = False
            self.server.tcp_closed(self)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size():
                transport.abort()  # close() would wait for a client that may never read
            else:
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.counted:
            self.counted = False
            self.server.tcp_closed(self)
        self.transport = None
        self.buffer.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._drain()

    def send(self, wire: bytes) -> None:
        if self.in_flight:
            self.in_flight -= 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(wire) > WRITE_CAP:
            self.server.tcp_event("overflow")
            self.close()
            return
        transport.write(_LEN.pack(len(wire)) + wire)
        self._activity()
        self._drain()

    def unanswered(self) -> None:
        if self.in_flight:
            self.in_flight -= 1
        self._drain()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._drain()

    def _activity(self) -> None:
        assert self.loop is not None
        self.active = self.loop.time()
        self.server.tcp_active(self)

    def _drain(self) -> None:
        """Hand on the whole queries buffered, as far as the bounds allow; then stop or
        start reading, and start the deadline of a message begun but not whole."""
        if self.draining or self.transport is None:
            return
        self.draining = True
        buffer = self.buffer
        taken = 0  # bytes of whole messages handed on: cut from the buffer once, at the end
        try:
            while not self.writing_paused and self.in_flight < IN_FLIGHT:
                if len(buffer) - taken < 2:
                    break
                end = taken + 2 + _LEN.unpack_from(buffer, taken)[0]
                if len(buffer) < end:
                    break
                message = bytes(buffer[taken + 2 : end])
                taken = end
                self.message_deadline = 0.0
                self._activity()
                self.in_flight += 1
                self.server.answer_tcp(message, self.client, time.perf_counter(), self)
                if self.transport is None or self.transport.is_closing():
                    return
        finally:
            del buffer[:taken]
            self.draining = False
        self._flow()
        if self.message_deadline or self.reading_paused or not _partial(buffer):
            return
        assert self.loop is not None
        self.message_deadline = self.loop.time() + self.server.tcp_message_timeout_s
        self._arm(self.message_deadline)

    def _flow(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        blocked = self.writing_paused or self.in_flight >= IN_FLIGHT
        if blocked and not self.reading_paused:
            self.reading_paused = True
            self.message_deadline = 0.0  # we stopped reading: not the client's delay
            transport.pause_reading()
            self.server.tcp_event("paused")
        elif not blocked and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
