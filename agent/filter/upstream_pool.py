"""Plain DNS to one upstream server over UDP: a small rotating pool of connected sockets, read
and written in batches (mmsg.Connected: recvmmsg/sendmmsg), answers matched by ID and question.

Why: a cache miss used to open a socket, connect it, register it with the event loop, send,
receive, unregister and close it, inside an asyncio task with a timeout of its own: about
300 us of CPU per miss on the bench machine (docs/benchmarks.md). Here a miss costs a dict
entry on a socket that is already open, and the queries of one event-loop turn leave in one
sendmmsg; the answers come back in one recvmmsg per socket and wake their futures directly.

Spoofing defence: each socket is connected to the server (the kernel drops datagrams from any
other address) and bound by the kernel to a random source port; every query has a random
16-bit ID, unique on its socket; a reply must carry that ID and repeat the question (case-
insensitively), or it is dropped and counted in `unmatched` (late answers to queries that
timed out count there too, while their socket is open). A socket takes at most
QUERIES_PER_SOCKET queries or lives SOCKET_LIFETIME_S, then takes no more and is closed once its
queries are answered or timed out, so the ports in use keep changing.

The ports are only visible on the path to the upstream: a pupil asking for a name of their own
sees the upstream's port, not ours.

A connected socket keeps the source address its route gave it at connect(): on a laptop that
has moved to another network that address may no longer be reachable, and every answer to it
is lost. So a socket on which a query timed out takes no more queries, and renew() (the laptop
agent calls it when the network changes) retires every socket at once
(tests/test_upstream_roaming.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from dataclasses import dataclass

from agent.filter import mmsg
from agent.filter.response import matches
from agent.filter.spec import UpstreamServer
from agent.filter.upstream_exchange import Exchange, RandomIds, Receiver, query_wire

log = logging.getLogger(__name__)

SOCKETS = 4  # open at once per server; each event-loop turn's queries go to one of them
QUERIES_PER_SOCKET = 256  # then the socket is retired: a new random port
SOCKET_LIFETIME_S = 30.0
IDLE_CLOSE_S = 10.0  # a socket with nothing in flight for this long is closed
ROUNDS = 8  # batches read per wake-up


@dataclass
class PoolStats:
    """Counters of one server's pool (read by upstreams.Upstreams.counters())."""

    sent: int = 0
    answered: int = 0
    unmatched: int = 0  # replies with no query of that ID and question: spoofed or late
    unsent: int = 0  # queries the kernel would not take (a full send buffer)
    sockets_opened: int = 0
    send_calls: int = 0  # sendmmsg calls (fewer than `sent` when batched)
    receive_calls: int = 0


class _Socket:
    """One connected UDP socket of the pool, as a bare descriptor (no Python socket object:
    nothing to warn about if a loop is dropped without closing us)."""

    __slots__ = ("fd", "opened", "pending", "port", "retired", "used", "used_at")

    def __init__(self, fd: int, port: int, now: float) -> None:
        self.fd = fd
        self.port = port
        self.opened = now
        self.used_at = now
        self.used = 0
        self.retired = False
        self.pending: dict[int, Exchange] = {}


class UdpPool:
    """Queries to one server over UDP (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        server: UpstreamServer,
        receiver: Receiver,
        io: mmsg.Connected,
    ) -> None:
        self.loop = loop
        self.server = server
        self.receiver = receiver
        self.io = io
        self.family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        self.sockets: list[_Socket] = []
        self.stats = PoolStats()
        self.ids = RandomIds()
        self._current: _Socket | None = None  # where this turn's queries go
        self._outbox: dict[_Socket, list[bytes]] = {}
        self._flush_scheduled = False

    # --- sending -------------------------------------------------------------------------

    def send(self, exchange: Exchange) -> None:
        """Queue the exchange's query on this turn's socket; it leaves when the turn ends."""
        sock = self._current
        if sock is None or sock.retired:
            try:
                sock = self._socket()
            except OSError as exc:
                self.receiver.failed(exchange, type(exc).__name__)
                return
        pending = sock.pending
        msg_id = self.ids.next()
        while msg_id in pending:
            msg_id = self.ids.next()
        pending[msg_id] = exchange
        exchange.msg_id = msg_id
        exchange.carrier = self
        sock.used += 1
        if sock.used >= QUERIES_PER_SOCKET:
            sock.retired = True
        wire = query_wire(exchange, msg_id)
        box = self._outbox.get(sock)
        if box is None:
            self._outbox[sock] = [wire]
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)
        else:
            box.append(wire)

    def _socket(self) -> _Socket:
        current = self._current
        if current is not None and not current.retired:
            return current
        live = [s for s in self.sockets if not s.retired]
        current = self._open() if len(live) < SOCKETS else random.choice(live)
        self._current = current
        return current

    def _open(self) -> _Socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Unbound, connect() picks a random ephemeral port (Linux randomises UDP ports).
            sock.connect((self.server.host, self.server.port))
            port = sock.getsockname()[1]
        except OSError:
            sock.close()
            raise
        now = self.loop.time()
        entry = _Socket(sock.detach(), port, now)
        self.loop.add_reader(entry.fd, self._readable, entry)
        self.sockets.append(entry)
        self.stats.sockets_opened += 1
        return entry

    def _flush(self) -> None:
        """End of the event-loop turn: each socket's queued queries in one sendmmsg."""
        self._flush_scheduled = False
        self._current = None  # the next turn picks a socket again
        outbox, self._outbox = self._outbox, {}
        now = self.loop.time()
        for sock, wires in outbox.items():
            sock.used_at = now
            try:
                sent = self.io.send(sock.fd, wires)
            except OSError as exc:
                self._fail_socket(sock, type(exc).__name__)
                continue
            self.stats.send_calls += 1 + (len(wires) - 1) // self.io.slots
            self.stats.sent += sent
            if sent < len(wires):
                # A full send buffer: those queries are lost as on a busy network; their
                # timeout moves them to the next server.
                self.stats.unsent += len(wires) - sent
            if now - sock.opened >= SOCKET_LIFETIME_S:
                sock.retired = True

    # --- receiving -----------------------------------------------------------------------

    def _readable(self, sock: _Socket) -> None:
        """The event loop's reader callback: every answer waiting, a batch at a time."""
        io, stats, receiver = self.io, self.stats, self.receiver
        pending = sock.pending
        for _ in range(ROUNDS):  # then other sockets get a turn, even under a flood
            try:
                datagrams = io.receive(sock.fd)
            except OSError as exc:
                # ECONNREFUSED and the like: the server is not there for anything on this socket.
                self._fail_socket(sock, type(exc).__name__)
                return
            stats.receive_calls += 1
            cut = io.cut
            for i, data in enumerate(datagrams):
                exchange = pending.get(data[0] << 8 | data[1]) if len(data) > 2 else None
                if exchange is None or not matches(data, exchange.msg_id, exchange.question):
                    stats.unmatched += 1
                    continue
                del pending[exchange.msg_id]
                exchange.carrier = None
                stats.answered += 1
                receiver.answered(exchange, data, bool(cut) and i in cut)
            if len(datagrams) < io.slots:
                break
        if sock.retired and not pending:
            self._close(sock)

    def _fail_socket(self, sock: _Socket, problem: str) -> None:
        """Every query on the socket failed at once (they all went to this server)."""
        failed = list(sock.pending.values())
        sock.pending.clear()
        sock.retired = True
        self._outbox.pop(sock, None)
        self._close(sock)
        log.debug("upstream %s: %s for %d queries", self.server.text, problem, len(failed))
        for exchange in failed:
            exchange.carrier = None
            self.receiver.failed(exchange, problem)

    # --- bookkeeping ---------------------------------------------------------------------

    def forget(self, exchange: Exchange) -> None:
        """The exchange timed out here: a late answer will be unmatched, and its socket takes
        no more queries (its source address may be a network the laptop has left)."""
        for sock in self.sockets:
            if sock.pending.get(exchange.msg_id) is exchange:
                del sock.pending[exchange.msg_id]
                self._retire(sock)
                break
        exchange.carrier = None

    def renew(self) -> None:
        """The network changed: every socket takes no more queries (those in flight are still
        answered where the old route works); new queries go on new sockets."""
        for sock in list(self.sockets):
            self._retire(sock)
        self._current = None

    def _retire(self, sock: _Socket) -> None:
        """No more queries on `sock`; closed now if nothing is waiting on it."""
        sock.retired = True
        if not sock.pending and sock not in self._outbox:
            self._close(sock)

    def sweep(self, now: float) -> bool:
        """Retire old sockets, close idle or drained ones; True while any is open."""
        for sock in list(self.sockets):
            if now - sock.opened >= SOCKET_LIFETIME_S:
                sock.retired = True
            if sock in self._outbox or sock.pending:
                continue
            if sock.retired or now - sock.used_at >= IDLE_CLOSE_S:
                self._close(sock)
        return bool(self.sockets)

    def _close(self, sock: _Socket) -> None:
        if sock not in self.sockets:
            return
        self.sockets.remove(sock)
        if self._current is sock:
            self._current = None
        with contextlib.suppress(RuntimeError):  # a closed loop holds no reader any more
            self.loop.remove_reader(sock.fd)
        os.close(sock.fd)

    def close(self) -> None:
        """Close every socket; their exchanges are the caller's to fail."""
        self._outbox.clear()
        for sock in list(self.sockets):
            sock.pending.clear()
            self._close(sock)

    def in_flight(self) -> int:
        """Queries waiting for an answer on this server's sockets."""
        return sum(len(s.pending) for s in self.sockets)
