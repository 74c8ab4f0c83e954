"""The DNS server: UDP and TCP listeners on asyncio (uvloop; listeners.py), parsing by hand,
answering by the chain, and handing every answer to metrics, logs and the query-record sinks.

Every packet gets an answer (FORMERR, NOTIMP, REFUSED or SERVFAIL at worst) except ones too
short to hold a header and responses (answering those could start a loop); both are counted.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.filter import mmsg, packet
from agent.filter.chain import Chain
from agent.filter.fastpath import FastAnswer, FastResult, Miss
from agent.filter.listeners import BatchedUdp, Datagram, Stream, TcpProtocol, UdpProtocol
from agent.filter.metrics import Metrics
from agent.filter.querylog import QueryRecord, QuerySink
from agent.filter.request import Pending, Request
from agent.filter.response import Stored
from agent.filter.spec import Endpoint
from agent.filter.verdict import Answer, Kind, Verdict

log = logging.getLogger(__name__)
_ERROR_KINDS = {packet.FORMERR: Kind.FORMERR, packet.NOTIMP: Kind.NOTIMP}


class DnsServer:
    """Listens, answers, and lets a reload swap the chain between two packets."""

    def __init__(
        self,
        chain: Chain,
        *,
        sinks: Sequence[QuerySink] = (),
        metrics: Metrics | None = None,
        max_udp_size: int = packet.OUR_UDP_SIZE,
        tcp_idle_timeout_s: float = 10.0,
        max_tcp_connections: int = 256,
        max_tcp_per_client: int = 16,
        tcp_message_timeout_s: float = 2.0,
        udp_batch: int = mmsg.SLOTS,
    ) -> None:
        self.chain = chain  # replaced whole on reload; in-flight queries keep the old one
        self.sinks = tuple(sinks)
        self.metrics = metrics
        self.max_udp_size = max_udp_size
        self.tcp_idle_timeout_s = tcp_idle_timeout_s
        self.max_tcp_connections = max_tcp_connections
        self.max_tcp_per_client = max_tcp_per_client
        self.tcp_message_timeout_s = tcp_message_timeout_s
        # Datagrams per recvmmsg/sendmmsg (mmsg.py); 0 or no such calls: asyncio's transport.
        self.udp_batch = udp_batch if mmsg.available() else 0
        self.tcp_connections = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: list[asyncio.DatagramTransport] = []
        self._batched: list[BatchedUdp] = []
        self._tcp: list[asyncio.Server] = []
        # Open TCP connections, least recently active first (dicts keep insertion order;
        # tcp_active moves one to the end), all of them and by client address.
        self.streams: dict[Stream, None] = {}
        self._streams_of: dict[str, dict[Stream, None]] = {}
        self.debug = log.isEnabledFor(logging.DEBUG)  # read once: the hot path checks it

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the UDP listeners are bound (useful with port 0)."""
        bound = [t.get_extra_info("sockname") for t in self._udp]
        bound += [b.datagrams.sock.getsockname() for b in self._batched]
        return [(host, port) for host, port, *_ in bound]

    async def start(self, listen: Sequence[Endpoint]) -> None:
        """Bind UDP and TCP on every endpoint; raises OSError if one cannot be bound."""
        loop = asyncio.get_running_loop()
        for endpoint in listen:
            sock, stream_sock = _bind_pair(endpoint)
            if self.udp_batch:
                unsent = functools.partial(self.metrics.dropped, "unsent") if self.metrics else None
                datagrams = mmsg.Datagrams(sock, self.udp_batch, unsent=unsent)
                batched = BatchedUdp(self, datagrams)
                loop.add_reader(sock.fileno(), batched.readable)
                self._batched.append(batched)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: UdpProtocol(self), sock=sock
                )
                self._udp.append(transport)
            tcp = await loop.create_server(lambda: TcpProtocol(self), sock=stream_sock)
            self._tcp.append(tcp)
            log.info("listening on %s (UDP and TCP)", endpoint.text)

    async def stop(self) -> None:
        """Close listeners and connections, then let in-flight answers finish."""
        for transport in self._udp:
            transport.close()
        loop = asyncio.get_running_loop()
        for batched in self._batched:
            loop.remove_reader(batched.datagrams.fd)
            batched.datagrams.close()
        for server in self._tcp:
            server.close()
        for stream in list(self.streams):
            stream.close()
        for server in self._tcp:
            await server.wait_closed()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        self._udp.clear()
        self._batched.clear()
        self._tcp.clear()

    def handle(
        self, data: bytes, client: str, transport: str, metered: bool = False
    ) -> tuple[Answer | Pending, Request | None] | None:
        """Parse and decide (the full path); None means drop (counted). `metered`: the fast
        path already took this query's rate-limit token."""
        try:
            try:
                q = packet.parse_query(data)
            except packet.Unusual:
                # dnslib only for the unusual packets packet.py leaves to it (slow path).
                from agent.filter import dnscodec

                q = dnscodec.parse_query(data)
        except packet.PacketError as exc:
            if exc.rcode is None:
                self.dropped += 1
                if self.metrics:
                    self.metrics.dropped("short" if len(data) < 12 else "response")
                return None
            verdict = Verdict(_ERROR_KINDS.get(exc.rcode, Kind.FORMERR), rule=str(exc))
            return Answer(packet.header_error(exc.msg_id, exc.flags, exc.rcode), verdict), None
        chain = self.chain
        request = Request(q, client, transport, chain.clock())
        request.metered = metered
        if q.edns and q.edns_version:
            verdict = Verdict(Kind.FORMERR, rule=f"EDNS version {q.edns_version}")
            return Answer(packet.error(q, packet.BADVERS), verdict), request
        try:
            return chain.resolve(request), request
        except Exception:  # one bad query must never take the server down
            log.exception("resolving %s for %s failed", q.qname, client)
            verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="internal error")
            return Answer(packet.error(q, packet.SERVFAIL), verdict), request

    def fast_resolver(self) -> Callable[[bytes, str], FastResult]:
        """The current chain's fast path (listeners read it once per batch)."""
        return self.chain.resolve_fast

    def recording(self) -> bool:
        """True if answers go to query sinks or the debug log."""
        return bool(self.sinks) or self.debug

    def tcp_opened(self, stream: Stream) -> bool:
        """Count a new TCP connection. When its client already holds max_tcp_per_client, or
        max_tcp_connections are open, the connection idle the longest (of that client, or of
        all) is closed to make room (RFC 7766 section 6.2.3): a new connection always gets in,
        so idle ones cannot lock the others out."""
        own = self._streams_of.get(stream.client)
        if own is not None and len(own) >= self.max_tcp_per_client:
            self._evict(own, "client_limit")
        elif self.tcp_connections >= self.max_tcp_connections:
            self._evict(self.streams, "table_full")
        self.tcp_connections += 1
        self.streams[stream] = None
        self._streams_of.setdefault(stream.client, {})[stream] = None
        return True

    def _evict(self, streams: dict[Stream, None], reason: str) -> None:
        # Least recently active first; one still being answered only if all are.
        victim = next((s for s in streams if not s.in_flight), None) or next(iter(streams))
        log.debug("closing a TCP connection of %s to make room (%s)", victim.client, reason)
        self.tcp_event(reason)
        victim.close()  # calls tcp_closed at once: the slot is free before we count the new one

    def tcp_active(self, stream: Stream) -> None:
        """Move a connection to the most recently active end of the tables."""
        streams = self.streams
        if stream in streams:
            del streams[stream]
            streams[stream] = None
            own = self._streams_of[stream.client]
            del own[stream]
            own[stream] = None

    def tcp_closed(self, stream: Stream) -> None:
        """Forget a connection tcp_opened counted."""
        if stream in self.streams:
            del self.streams[stream]
            self.tcp_connections -= 1
            own = self._streams_of[stream.client]
            del own[stream]
            if not own:
                del self._streams_of[stream.client]

    def tcp_event(self, event: str) -> None:
        """Count a TCP connection closed (idle, slow, overflow, client_limit, table_full) or
        paused because its client does not read its answers."""
        if self.metrics is not None:
            self.metrics.tcp_event(event)

    def fast(self, data: bytes, client: str) -> FastResult:
        """The compiled chain's answer, a Miss to fetch, or False/True for the full path (see
        fastpath.py)."""
        try:
            return self.chain.resolve_fast(data, client)
        except Exception:  # never die on one packet: let the full path answer it
            log.exception("fast path failed on a packet from %s", client)
            return False

    def answered_fast(self, fast: FastAnswer, data: bytes, client: str, started: float) -> None:
        """Account for a fast-path answer: metrics, then (if wanted) the log and records."""
        if self.metrics is not None:
            self.metrics.answered(fast[1], time.perf_counter() - started)
        if self.sinks or self.debug:
            self.record_fast(fast[1], fast[2], fast[3], data, client)

    def answered_batch(
        self, fast: list[FastAnswer], data: list[bytes], clients: list[str], started: float
    ) -> None:
        """Account for a batch of fast-path answers already sent: counted one by one, timed
        once for the batch (Metrics.answered's count, inlined: this runs per packet)."""
        metrics = self.metrics
        if metrics is not None:
            answers = metrics.answers
            for answer in fast:
                key = answer[1].labels
                answers[key] = answers.get(key, 0) + 1
            metrics.timed(len(fast), time.perf_counter() - started)
        if data:
            for answer, wire, client in zip(fast, data, clients, strict=True):
                self.record_fast(answer[1], answer[2], answer[3], wire, client)

    def answer_udp(
        self, data: bytes, client: str, metered: bool, started: float, udp: Datagram, peer: Any
    ) -> None:
        """The full path for a UDP query: answer now, or when its upstream replies."""
        deliver = _Deliver(self, client, started, udp=udp, peer=peer)
        self._answer(data, client, "udp", metered, deliver)

    def answer_miss(
        self, miss: Miss, data: bytes, client: str, started: float, udp: Datagram, peer: Any
    ) -> None:
        """A UDP cache miss the fast path let through: asked upstream here and answered from
        the upstream pool's read callback (no task, no future, no Request, no walk down the
        links)."""
        done = functools.partial(self._fetched, miss, data, client, started, udp, peer)
        try:
            miss.fast.forwarder.upstreams.ask_then(miss.key, done, miss.question(data))
        except Exception:  # never die on one packet: the full path answers it
            log.exception("asking upstream for %s failed", miss.key[0])
            self.answer_udp(data, client, True, started, udp, peer)

    def _fetched(
        self,
        miss: Miss,
        data: bytes,
        client: str,
        started: float,
        udp: Datagram,
        peer: Any,
        fetched: Stored | Exception,
    ) -> None:
        """Keep a miss's upstream answer as the full chain does, and answer it by the fast
        path's cached-answer step. The full chain answers instead (with what was fetched, not
        asking again) when every upstream failed, when the answer is too big for the client
        (TC), or when a reload retired that fast path meanwhile."""
        targets = None
        if isinstance(fetched, Stored):
            try:
                fast = miss.fast
                targets = fast.forwarder.keep(miss.key, fetched)
                if fast is self.chain.fast:
                    answer = fast.fetched(miss, data, fetched, targets)
                    if answer is not None:
                        if not udp.is_closing():
                            udp.sendto(answer[0], peer)
                        self.answered_fast(answer, data, client, started)
                        return
            except Exception as exc:  # a callback must not raise into the upstream pool
                log.exception("answering %s from the fast path failed", miss.key[0])
                fetched = exc
        self._fetched_full(data, client, started, udp, peer, fetched, targets)

    def _fetched_full(
        self,
        data: bytes,
        client: str,
        started: float,
        udp: Datagram,
        peer: Any,
        fetched: Stored | Exception,
        targets: tuple[str, ...] | None,
    ) -> None:
        """The full chain's answer to a miss fetched already (Chain.answer_fetched)."""
        deliver = _Deliver(self, client, started, udp=udp, peer=peer)
        chain = self.chain
        request = Request(packet.parse_query(data), client, "udp", chain.clock())
        request.metered = True  # the fast path took its token
        try:
            outcome = chain.answer_fetched(request, fetched, targets)
        except Exception:
            log.exception("answering %s for %s failed", request.query.qname, client)
            verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="internal error")
            outcome = Answer(packet.error(request.query, packet.SERVFAIL), verdict)
        if isinstance(outcome, Answer):
            self._delivered(deliver, outcome, request)
        else:
            self.run_later(outcome, request, deliver)

    def answer_tcp(self, message: bytes, client: str, started: float, stream: Stream) -> None:
        """The full path for one query of a TCP connection."""
        deliver = _Deliver(self, client, started, stream=stream)
        self._answer(message, client, "tcp", False, deliver)

    def _answer(
        self, data: bytes, client: str, transport: str, metered: bool, deliver: _Deliver
    ) -> None:
        result = self.handle(data, client, transport, metered)
        if result is None:
            if deliver.stream is not None:
                deliver.stream.unanswered()
            return
        outcome, request = result
        if isinstance(outcome, Answer):
            deliver(outcome, request)
        else:
            self.run_later(outcome, request, deliver)

    def finish(self, answer: Answer, request: Request | None, client: str, started: float) -> None:
        """Account for an answer: metrics, debug log, query records."""
        verdict = answer.verdict
        if self.metrics is not None:
            self.metrics.answered(verdict, time.perf_counter() - started)
        if request is not None:
            q = request.query
            self._record(request.now, client, verdict, q.qname, q.qtype)

    def record_fast(
        self, verdict: Verdict, qname: str | None, qtype: int, data: bytes, client: str
    ) -> None:
        """Log and record a fast-path answer like finish() does for a full-path one."""
        if qname is None:  # refused before the name was looked at
            qname = packet.parse_query(data).qname
        self._record(self.chain.clock(), client, verdict, qname, qtype)

    def _record(self, now: float, client: str, verdict: Verdict, qname: str, qtype: int) -> None:
        """The debug line and the query record of one answer, from either path."""
        if self.debug:
            log.debug("%s %s %s: %s", client, qname, qtype, verdict.describe())
        if not self.sinks:
            return
        record = QueryRecord(
            int(now * 1000),
            client,
            verdict.group,
            qname,
            qtype,
            verdict.kind.value,
            verdict.category,
            verdict.rule,
        )
        for sink in self.sinks:
            try:
                sink.offer(record)
            except Exception:  # a sink must not raise; if one does, the query still counts
                log.exception("query sink %r failed", sink)

    def run_later(self, pending: Pending, request: Request | None, deliver: _Deliver) -> None:
        """Finish a network-bound answer: through the link's callback when it has one (no task
        per cache miss), else in a task we keep a reference to."""
        if pending.start is not None:
            try:
                pending.start(lambda answer: self._delivered(deliver, answer, request))
                return
            except Exception:
                log.exception("answering %s failed", request.query.qname if request else "?")
                if request is None:
                    return
                verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="internal error")
                deliver(Answer(packet.error(request.query, packet.SERVFAIL), verdict), request)
                return
        task = asyncio.ensure_future(self._complete(pending, request, deliver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _delivered(deliver: _Deliver, answer: Answer, request: Request | None) -> None:
        try:
            deliver(answer, request)
        except Exception:  # a callback must not raise into the event loop's handler
            log.exception(
                "sending the answer to %s failed", request.query.qname if request else "?"
            )

    async def _complete(self, pending: Pending, request: Request | None, deliver: _Deliver) -> None:
        try:
            answer = await pending.run()
        except Exception:
            log.exception("answering %s failed", request.query.qname if request else "?")
            if request is None:
                return
            verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="internal error")
            answer = Answer(packet.error(request.query, packet.SERVFAIL), verdict)
        deliver(answer, request)

    def udp_limit(self, request: Request | None) -> int:
        """Largest UDP reply for this client: its EDNS size (at least 512), capped by ours."""
        if request is None:
            return 512
        return max(512, min(request.query.reply_limit, self.max_udp_size))


class _Deliver:
    """Sends a finished answer back on the transport it came from."""

    __slots__ = ("client", "peer", "server", "started", "stream", "udp")

    def __init__(
        self,
        server: DnsServer,
        client: str,
        started: float,
        udp: Datagram | None = None,
        peer: Any = None,
        stream: Stream | None = None,
    ) -> None:
        self.server = server
        self.client = client
        self.started = started
        self.udp = udp
        self.peer = peer
        self.stream = stream

    def __call__(self, answer: Answer, request: Request | None) -> None:
        wire = answer.wire
        if self.udp is not None:
            if len(wire) > self.server.udp_limit(request) and request is not None:
                wire = packet.truncated(request.query)
            if not self.udp.is_closing():
                self.udp.sendto(wire, self.peer)
        elif self.stream is not None:
            self.stream.send(wire)
        self.server.finish(answer, request, self.client, self.started)


def _bind_pair(endpoint: Endpoint) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on the same port. With port 0 the
    kernel picks the UDP port, and another process may already hold that port for TCP:
    then try another (a fixed port that is taken is an error at once)."""
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    tries = 20 if endpoint.port == 0 else 1
    for attempt in range(tries):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp.bind((endpoint.host, endpoint.port))
        except OSError as exc:
            udp.close()
            raise endpoint.bind_failed(exc, "DNS (UDP, [server] listen)") from exc
        port = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.bind((endpoint.host, port))
            tcp.listen(socket.SOMAXCONN)
            tcp.setblocking(False)
        except OSError as exc:
            tcp.close()
            udp.close()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                continue
            raise endpoint.bind_failed(exc, "DNS (TCP, [server] listen)") from exc
        udp.setblocking(False)
        return udp, tcp
    raise AssertionError("unreachable: the last try raises")
