"""Asking upstream resolvers: UDP with a fresh random source port and ID per query, TCP when
truncated, DNS over TLS for tls:// servers, failover in order within one overall timeout.

A reply counts only if it comes from the server we asked (connected socket), carries our ID
and repeats our question; anything else is ignored while we keep waiting (anti-spoofing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable

from agent.filter import packet
from agent.filter.response import ResponseError, Stored, matches, parse_response
from agent.filter.spec import UpstreamServer, UpstreamSpec
from common.errors import HedgerowError

log = logging.getLogger(__name__)
FAILED_RCODES = frozenset({packet.SERVFAIL, packet.REFUSED, packet.NOTIMP, packet.FORMERR})
InflightKey = tuple[str, int, int, bool]


class UpstreamError(HedgerowError):
    """Every upstream failed or timed out."""


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
        self._inflight: dict[InflightKey, asyncio.Task[Stored]] = {}

    async def ask(self, qname: str, qtype: int, qclass: int, do: bool) -> Stored:
        """The answer for a question; identical questions in flight share one upstream query."""
        key = (qname, qtype, qclass, do)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._ask(qname, qtype, qclass, do))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: InflightKey, task: asyncio.Task[Stored]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a waiter that went away leaves no warning

    async def _ask(self, qname: str, qtype: int, qclass: int, do: bool) -> Stored:
        servers = self.config.servers
        deadline = time.monotonic() + self.config.timeout_ms / 1000
        question = packet.question_bytes(qname, qtype, qclass)
        problem = "no upstream"
        for position, server in enumerate(servers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            budget = remaining / (len(servers) - position)
            try:
                async with asyncio.timeout(budget):
                    stored = await self._attempt(server, qname, qtype, qclass, do, question)
            except TimeoutError:
                problem = "timeout"
            except (OSError, ResponseError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                problem = type(exc).__name__
            else:
                if stored.rcode not in FAILED_RCODES:
                    return stored
                problem = f"rcode {stored.rcode}"
            log.debug("upstream %s failed for %s: %s", server.text, qname, problem)
            self._on_error(server.text, problem.split(" ")[0])
        raise UpstreamError(f"all upstreams failed for {qname} (last: {problem})")

    async def _attempt(
        self, server: UpstreamServer, qname: str, qtype: int, qclass: int, do: bool, question: bytes
    ) -> Stored:
        msg_id = secrets.randbits(16)
        message = packet.query_message(msg_id, qname, qtype, qclass, do)
        if server.tls:
            data = await self._stream(server, message, msg_id, question, tls=True)
        else:
            data = await self._udp(server, message, msg_id, question)
            if data[2] & 0x02:  # TC: the full answer only fits over TCP
                data = await self._stream(server, message, msg_id, question, tls=False)
        return parse_response(data, question)

    async def _udp(
        self, server: UpstreamServer, message: bytes, msg_id: int, question: bytes
    ) -> bytes:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((server.host, server.port))  # the kernel picks a random source port
            await loop.sock_sendall(sock, message)
            while True:
                data = await loop.sock_recv(sock, 65535)
                if matches(data, msg_id, question):
                    return data
                log.debug("ignored a reply from %s that does not match our query", server.text)

    async def _stream(
        self, server: UpstreamServer, message: bytes, msg_id: int, question: bytes, *, tls: bool
    ) -> bytes:
        reader, writer = await asyncio.open_connection(
            server.host,
            server.port,
            ssl=self._tls if tls else None,
            server_hostname=(server.server_name or server.host) if tls else None,
        )
        try:
            writer.write(struct.pack("!H", len(message)) + message)
            await writer.drain()
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                if matches(data, msg_id, question):
                    return data
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
