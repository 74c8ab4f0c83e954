"""DNS over TCP and over TLS to one upstream server on persistent, pipelined connections
(RFC 7766 section 6.2, RFC 7858 section 3.4): many queries in flight on one connection,
answers matched by ID and question in whatever order they come.

Why: a `tls://` upstream used to get a TCP connection and a TLS handshake per cache miss, and
the laptop agent's off-site path uses exactly that upstream. Here one connection per server
carries everything (a second opens only past MAX_IN_FLIGHT queries in flight, up to
MAX_CONNECTIONS); an idle one is closed after IDLE_CLOSE_S. Plain TCP (a truncated UDP answer
asked again) uses the same code without TLS.

A connection that cannot be made fails the queries waiting for it (so they move to the next
server at once) and starts a backoff, doubling from BACKOFF_S to BACKOFF_MAX_S, during which
queries to this server fail without trying; a made connection ends it. A connection that
closes under queries in flight (the server's idle timeout raced our query) sends each of them
once more on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from dataclasses import dataclass
from typing import cast

from agent.filter.response import matches
from agent.filter.spec import UpstreamServer
from agent.filter.upstream_exchange import Exchange, RandomIds, Receiver, query_wire

log = logging.getLogger(__name__)
_LEN = struct.Struct("!H")

MAX_IN_FLIGHT = 100  # per connection, before another is opened
MAX_CONNECTIONS = 3  # per server
IDLE_CLOSE_S = 10.0
BACKOFF_S = 0.25
BACKOFF_MAX_S = 10.0


@dataclass
class StreamStats:
    """Counters of one server's connections (read by upstreams.Upstreams.counters())."""

    connects: int = 0  # connections made (for TLS: handshakes completed)
    connect_failures: int = 0
    sent: int = 0
    answered: int = 0
    unmatched: int = 0
    resent: int = 0


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: length-prefixed queries out, answers in any order."""

    def __init__(self, pool: StreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, Exchange] = {}
        self.buffer = bytearray()
        self.used_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.used_at = self.pool.loop.time()

    def send(self, exchange: Exchange) -> None:
        pending = self.pending
        msg_id = self.pool.ids.next()
        while msg_id in pending:
            msg_id = self.pool.ids.next()
        pending[msg_id] = exchange
        exchange.msg_id = msg_id
        exchange.carrier = self.pool
        wire = query_wire(exchange, msg_id)
        assert self.transport is not None
        self.transport.write(_LEN.pack(len(wire)) + wire)
        self.used_at = self.pool.loop.time()
        self.pool.stats.sent += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        stats = self.pool.stats
        while len(buffer) >= 2:
            size = _LEN.unpack_from(buffer)[0]
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            exchange = self.pending.get(int.from_bytes(message[:2], "big")) if size > 2 else None
            if exchange is None or not matches(message, exchange.msg_id, exchange.question):
                stats.unmatched += 1
                continue
            del self.pending[exchange.msg_id]
            exchange.carrier = None
            stats.answered += 1
            self.used_at = self.pool.loop.time()
            self.pool.receiver.answered(exchange, message, False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pool.lost(self, exc)

    def close(self) -> None:
        """Close now (abort: nothing of ours is left to send)."""
        if self.transport is not None:
            self.transport.abort()


class StreamPool:
    """Pipelined connections to one server, TCP or TLS (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: UpstreamServer,
        receiver: Receiver,
        tls: ssl.SSLContext | None,
        connect_timeout_s: float,
    ) -> None:
        self.loop = loop
        self.server = server
        self.receiver = receiver
        self.tls = tls
        self.connect_timeout_s = connect_timeout_s
        self.connections: list[_Connection] = []
        self.waiting: list[Exchange] = []  # for a connection being made
        self.stats = StreamStats()
        self.ids = RandomIds()
        self._connecting: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._problem = ""

    def send(self, exchange: Exchange) -> None:
        """Send on the least busy connection, or wait for one being made."""
        best: _Connection | None = None
        for conn in self.connections:
            if not conn.closed and (best is None or len(conn.pending) < len(best.pending)):
                best = conn
        if best is not None and (
            len(best.pending) < MAX_IN_FLIGHT or len(self.connections) >= MAX_CONNECTIONS
        ):
            best.send(exchange)
            return
        if self._connecting is None and self.loop.time() < self._retry_at:
            if best is not None:
                best.send(exchange)
            else:
                self.receiver.failed(exchange, self._problem)  # backing off: next server now
            return
        if best is not None and self._connecting is not None:
            best.send(exchange)  # a second connection is on its way; this one will do
            return
        exchange.carrier = self
        self.waiting.append(exchange)
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        server = self.server
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self.loop.create_connection(
                    self._made,
                    server.host,
                    server.port,
                    ssl=self.tls,
                    server_hostname=(server.server_name or server.host) if self.tls else None,
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            problem = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._connecting = None
            self._failed_to_connect(problem, exc)
            return
        self._connecting = None
        self._backoff = 0.0
        self.stats.connects += 1
        waiting, self.waiting = self.waiting, []
        for exchange in waiting:
            self.send(exchange)

    def _made(self) -> _Connection:
        conn = _Connection(self)
        self.connections.append(conn)
        return conn

    def _failed_to_connect(self, problem: str, exc: BaseException) -> None:
        self.stats.connect_failures += 1
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2 or BACKOFF_S)
        self._retry_at = self.loop.time() + self._backoff
        self._problem = problem
        log.debug("upstream %s: cannot connect (%s); retry in %.2f s", self.server.text, exc,
                  self._backoff)
        waiting, self.waiting = self.waiting, []
        for exchange in waiting:
            exchange.carrier = None
            self.receiver.failed(exchange, problem)

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        """A connection closed: its unanswered queries go once more on another."""
        with contextlib.suppress(ValueError):
            self.connections.remove(conn)
        pending = list(conn.pending.values())
        conn.pending.clear()
        problem = type(exc).__name__ if exc is not None else "ConnectionResetError"
        for exchange in pending:
            exchange.carrier = None
            if exchange.resent or exchange.done:
                self.receiver.failed(exchange, problem)
            else:
                exchange.resent = True
                self.stats.resent += 1
                self.send(exchange)

    def forget(self, exchange: Exchange) -> None:
        """The exchange timed out: stop waiting for it here."""
        for conn in self.connections:
            if conn.pending.get(exchange.msg_id) is exchange:
                del conn.pending[exchange.msg_id]
                break
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(exchange)
        exchange.carrier = None

    def sweep(self, now: float) -> bool:
        """Close connections idle for IDLE_CLOSE_S; True while any is open or being made."""
        for conn in list(self.connections):
            if not conn.pending and now - conn.used_at >= IDLE_CLOSE_S:
                self.connections.remove(conn)
                conn.close()
        return bool(self.connections) or self._connecting is not None

    def renew(self) -> None:
        """The network changed: close every connection (a TCP connection is bound to the
        source address it was made from); what was in flight on one goes once more on a new
        connection, made from the new network, with no backoff left from the old one."""
        self._backoff = self._retry_at = 0.0
        connections, self.connections = self.connections, []
        for conn in connections:
            conn.closed = True  # taken by no new query while its loss is on its way
            conn.close()

    def close(self) -> None:
        """Close every connection and stop making one; exchanges are the caller's to fail."""
        # RuntimeError: the loop they belong to is closed already (nothing left to stop).
        if self._connecting is not None:
            with contextlib.suppress(RuntimeError):
                self._connecting.cancel()
            self._connecting = None
        self.waiting.clear()
        for conn in self.connections:
            conn.pending.clear()
            with contextlib.suppress(RuntimeError):
                conn.close()
        self.connections.clear()

    def in_flight(self) -> int:
        """Queries sent and not answered, and queries waiting for a connection."""
        return sum(len(c.pending) for c in self.connections) + len(self.waiting)
