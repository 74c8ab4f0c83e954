"""Asking upstream resolvers: the servers tried in order within one overall timeout, UDP
through a rotating pool of sockets (upstream_pool.py), TCP when truncated and DNS over TLS on
persistent pipelined connections (upstream_streams.py).

A reply counts only if it comes from the server we asked (connected sockets), carries our
random ID and repeats our question; anything else is dropped and counted while we keep
waiting (anti-spoofing). Identical questions in flight share one upstream query.

No task and no timer per query: ask() gives the caller a future, which the carriers resolve
from their read callbacks; one sweep every TICK_S times out what is overdue (a timer wheel of
TICK_S buckets) and moves it to the next server. The sweep runs every IDLE_SWEEP_S instead
while nothing is in flight and something is still open, to close idle sockets and
connections, and not at all once everything is closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Callable

from agent.filter import mmsg, packet
from agent.filter.response import ResponseError, Stored, parse_response
from agent.filter.spec import UpstreamServer, UpstreamSpec
from agent.filter.upstream_exchange import Carrier, Exchange
from agent.filter.upstream_pool import UdpPool
from agent.filter.upstream_streams import StreamPool
from common.errors import HedgerowError

log = logging.getLogger(__name__)
FAILED_RCODES = frozenset({packet.SERVFAIL, packet.REFUSED, packet.NOTIMP, packet.FORMERR})
InflightKey = tuple[str, int, int, bool]
TICK_S = 0.01  # timeout resolution
IDLE_SWEEP_S = 1.0


class UpstreamError(HedgerowError):
    """Every upstream failed or timed out."""


class _Server:
    """One configured server and what carries queries to it: UDP (then TCP) or TLS."""

    __slots__ = ("datagrams", "server", "stream")

    def __init__(self, server: UpstreamServer) -> None:
        self.server = server
        self.datagrams: UdpPool | None = None
        self.stream: StreamPool | None = None


class Upstreams:
    """The configured upstream resolvers, tried in order."""

    def __init__(
        self,
        config: UpstreamSpec,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self._on_error = on_error or (lambda server, reason: None)
        self._tls: ssl.SSLContext | None = None
        if any(s.tls for s in config.servers):
            cafile = str(config.tls_ca) if config.tls_ca else None
            self._tls = ssl.create_default_context(cafile=cafile)
        self._servers = [_Server(s) for s in config.servers]
        self._inflight: dict[InflightKey, Exchange] = {}
        # slot -> the exchanges whose current attempt ends in it; an answered one leaves at
        # once (holding them to their deadline kept ~8 MB of answers alive at 5,000 misses/s)
        self._wheel: dict[int, dict[Exchange, None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: mmsg.Connected | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = math.inf
        self.failed_queries = 0

    def ask(self, qname: str, qtype: int, qclass: int, do: bool) -> asyncio.Future[Stored]:
        """The answer for a question, as a future; identical questions in flight share one
        upstream query (each caller has a future of its own, so one that is cancelled leaves
        the others waiting). Fails with UpstreamError when every server failed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Stored] = loop.create_future()
        exchange = self._exchange((qname, qtype, qclass, do), loop)
        exchange.waiters.append(waiter)
        if exchange.position < 0:
            self._attempt(exchange, 0, loop.time())
        return waiter

    def ask_then(
        self,
        key: InflightKey,
        done: Callable[[Stored | Exception], None],
        question: bytes | None = None,
    ) -> None:
        """As ask() for key (qname, qtype, qclass, DO), but the answer (or the UpstreamError)
        goes to `done`, called from the carrier's read callback or the sweep (or at once, if
        no server can be asked): no future and no event-loop turn in between, for the fast
        path's cache misses. `done` should not raise; if it does, that is logged and the
        other callers still hear.
        `question`: the question section as packet.question_bytes gives it, if the caller has
        it already (the fast path cuts it from the query)."""
        loop = asyncio.get_running_loop()
        exchange = self._exchange(key, loop, question)
        exchange.callbacks.append(done)
        if exchange.position < 0:
            self._attempt(exchange, 0, loop.time())

    def _exchange(
        self, key: InflightKey, loop: asyncio.AbstractEventLoop, question: bytes | None = None
    ) -> Exchange:
        """The exchange in flight for a question, or a new one not yet sent (position -1:
        the caller sends it once it has joined, so a failure at once reaches it too)."""
        if loop is not self._loop:
            self._bind(loop)
        exchange = self._inflight.get(key)
        if exchange is None:
            if question is None:
                question = packet.question_bytes(key[0], key[1], key[2])
            deadline = loop.time() + self.config.timeout_ms / 1000
            exchange = Exchange(key, question, deadline)
            exchange.position = -1
            self._inflight[key] = exchange
        return exchange

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use this loop from now on (the first ask, or a caller on another loop: whatever the
        previous loop held is closed)."""
        if self._loop is not None:
            self.close()
            for entry in self._servers:
                entry.datagrams = entry.stream = None
        self._loop = loop

    # --- one server after another --------------------------------------------------------

    def _attempt(self, exchange: Exchange, position: int, now: float) -> None:
        """Ask the server at `position` with its share of the time left."""
        servers = self._servers
        remaining = exchange.deadline - now
        if position >= len(servers) or remaining <= 0:
            self._give_up(exchange)
            return
        exchange.position = position
        exchange.resent = False
        exchange.tcp = False
        exchange.attempt_deadline = now + remaining / (len(servers) - position)
        self._schedule(exchange)
        entry = servers[position]
        if entry.server.tls:
            self._stream(entry).send(exchange)
        else:
            (entry.datagrams or self._datagrams(entry)).send(exchange)

    def answered(self, exchange: Exchange, data: bytes, cut: bool) -> None:
        """A matching reply (called by the carriers): done, over TCP if truncated, or next."""
        if exchange.done:
            return
        entry = self._servers[exchange.position]
        if (cut or data[2] & 0x02) and not exchange.tcp and not entry.server.tls:
            # TC: the full answer only fits over TCP; same server, same share of the time.
            exchange.tcp = True
            self._stream(entry).send(exchange)
            return
        try:
            stored = parse_response(data, exchange.question)
        except ResponseError:
            self.failed(exchange, "ResponseError")
            return
        if stored.rcode in FAILED_RCODES:
            self.failed(exchange, f"rcode {stored.rcode}")
            return
        self._finish(exchange, stored)

    def failed(self, exchange: Exchange, problem: str) -> None:
        """This server failed the exchange (called by the carriers and the sweep): the next."""
        if exchange.done:
            return
        server = self._servers[exchange.position].server
        log.debug("upstream %s failed for %s: %s", server.text, exchange.qname, problem)
        self._on_error(server.text, problem.split(" ")[0])
        exchange.problem = problem
        assert self._loop is not None
        self._attempt(exchange, exchange.position + 1, self._loop.time())

    def _finish(self, exchange: Exchange, stored: Stored) -> None:
        exchange.done = True
        self._unschedule(exchange)
        inflight, key = self._inflight, exchange.key
        if inflight.get(key) is exchange:
            del inflight[key]
        if exchange.waiters:
            for waiter in exchange.waiters:
                if not waiter.done():
                    waiter.set_result(stored)
            exchange.waiters = []
        if exchange.callbacks:
            _tell(exchange, stored)

    def _give_up(self, exchange: Exchange) -> None:
        exchange.done = True
        self._unschedule(exchange)
        self.failed_queries += 1
        if self._inflight.get(exchange.key) is exchange:
            del self._inflight[exchange.key]
        problem = exchange.problem or "no upstream"
        error = UpstreamError(f"all upstreams failed for {exchange.qname} (last: {problem})")
        for waiter in exchange.waiters:
            if not waiter.done():
                waiter.set_exception(error)
        exchange.waiters = []
        if exchange.callbacks:
            _tell(exchange, error)

    def _datagrams(self, entry: _Server) -> UdpPool:
        if entry.datagrams is None:
            assert self._loop is not None
            if self._io is None:
                self._io = mmsg.Connected()
            entry.datagrams = UdpPool(self._loop, entry.server, self, self._io)
        return entry.datagrams

    def _stream(self, entry: _Server) -> StreamPool:
        if entry.stream is None:
            assert self._loop is not None
            tls = self._tls if entry.server.tls else None
            timeout = self.config.timeout_ms / 1000
            entry.stream = StreamPool(self._loop, entry.server, self, tls, timeout)
        return entry.stream

    # --- the timer wheel -----------------------------------------------------------------

    def _schedule(self, exchange: Exchange) -> None:
        if exchange.slot >= 0:
            self._unschedule(exchange)
        slot = math.ceil(exchange.attempt_deadline / TICK_S)
        exchange.slot = slot
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = {exchange: None}
        else:
            bucket[exchange] = None
        at = slot * TICK_S
        if at < self._tick_at:
            self._arm(at)

    def _unschedule(self, exchange: Exchange) -> None:
        bucket = self._wheel.get(exchange.slot)
        if bucket is not None:
            bucket.pop(exchange, None)
            if not bucket:
                del self._wheel[exchange.slot]

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = at
        self._tick = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        """Time out every exchange whose server's share of time is over; close idle things."""
        assert self._loop is not None
        self._tick = None
        self._tick_at = math.inf
        now = self._loop.time()
        # Half a tick of slack: the loop may run a timer a little before its time.
        due_slot = math.floor(now / TICK_S + 0.5)
        wheel = self._wheel
        for slot in sorted(s for s in wheel if s <= due_slot):
            for exchange in list(wheel.pop(slot)):
                if exchange.done or exchange.slot != slot:
                    continue  # answered, or moved on to another server, in this sweep
                exchange.slot = -1
                carrier: Carrier | None = exchange.carrier
                if carrier is not None:
                    carrier.forget(exchange)
                self.failed(exchange, "timeout")
        open_now = False
        for entry in self._servers:
            for carrier_ in (entry.datagrams, entry.stream):
                if carrier_ is not None and carrier_.sweep(now):
                    open_now = True
        if wheel:
            self._arm(min(wheel) * TICK_S)
        elif open_now:
            self._arm(now + IDLE_SWEEP_S)

    # --- reading and closing -------------------------------------------------------------

    def counters(self) -> dict[str, float]:
        """Totals over every server, for /metrics (Metrics.watch): queries sent, replies
        dropped as unmatched (spoofed or late), sockets and connections made."""
        sent = unmatched = sockets = connects = send_calls = 0
        for entry in self._servers:
            if entry.datagrams is not None:
                stats = entry.datagrams.stats
                sent += stats.sent
                unmatched += stats.unmatched
                sockets += stats.sockets_opened
                send_calls += stats.send_calls
            if entry.stream is not None:
                streams = entry.stream.stats
                sent += streams.sent
                unmatched += streams.unmatched
                connects += streams.connects
        return {
            "upstream_queries_sent": sent,
            "upstream_send_calls": send_calls,
            "upstream_replies_unmatched": unmatched,
            "upstream_sockets_opened": sockets,
            "upstream_connections_made": connects,
            "upstream_queries_failed": self.failed_queries,
        }

    def carriers(self, server: UpstreamServer) -> tuple[UdpPool | None, StreamPool | None]:
        """The UDP pool and the stream connections of one server (None until first used)."""
        entry = next(e for e in self._servers if e.server == server)
        return entry.datagrams, entry.stream

    def renew(self) -> None:
        """The network changed (a laptop moved to another one): new questions leave on new
        sockets and connections, routed and addressed from the new network."""
        for entry in self._servers:
            if entry.datagrams is not None:
                entry.datagrams.renew()
            if entry.stream is not None:
                entry.stream.renew()

    def close(self) -> None:
        """Close every socket and connection; questions still in flight fail."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._tick_at = math.inf
        for entry in self._servers:
            for carrier in (entry.datagrams, entry.stream):
                if carrier is not None:
                    carrier.close()
        self._wheel.clear()
        for exchange in list(self._inflight.values()):
            exchange.problem = "closed"
            exchange.position = len(self._servers)
            self._give_up(exchange)


def _tell(exchange: Exchange, outcome: Stored | Exception) -> None:
    """Hand an exchange's outcome to its ask_then callers, each on its own."""
    callbacks, exchange.callbacks = exchange.callbacks, []
    for done in callbacks:
        try:
            done(outcome)
        except Exception:  # one caller's bug must not keep the answer from the others
            log.exception("a caller of the upstream answer for %s failed", exchange.qname)
