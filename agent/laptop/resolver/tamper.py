"""The tamper watch: ask, where the OS resolver sends its queries, a fresh self-check name that
only our own filter can answer correctly (agent/filter/selfcheck.py). Any other outcome means
the system no longer asks us; the service then calls apply() again and sends a `tamper` event.

It sends the query itself to resolver.probe_address() rather than calling getaddrinfo: that is
the address the OS resolver uses, and the answer's address is checked, not just its presence.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from dataclasses import dataclass

from agent.filter import packet, replies, response, selfcheck
from agent.laptop.resolver.base import ResolverError, SystemResolver

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TamperResult:
    """One check: `ok` if our filter answered; `seen` what the OS uses ("ours" when ok);
    `detail` what happened, for the event and the log."""

    ok: bool
    seen: str
    detail: str


class TamperWatch:
    """Checks, one query at a time, that the OS resolver still leads to our filter."""

    def __init__(self, key: bytes, resolver: SystemResolver, *, timeout_s: float = 1.0) -> None:
        self.key = key
        self.resolver = resolver
        self.timeout_s = timeout_s

    async def check(self) -> TamperResult:
        """Ask a fresh self-check name at the OS resolver's address and judge the answer."""
        label = secrets.token_hex(16)  # never reused: an old answer replayed proves nothing
        want = selfcheck.self_check_address(self.key, label)
        try:
            host, port = self.resolver.probe_address()
        except ResolverError as exc:
            return self._tampered(f"cannot tell where the OS asks: {exc}")
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            reply = await self._ask(host, port, f"{label}.{selfcheck.ZONE}")
        except TimeoutError:
            return self._tampered(f"no answer from {where} within {self.timeout_s} s")
        except OSError as exc:
            return self._tampered(f"cannot ask {where}: {exc}")
        try:
            rcode, addresses = replies.a_answers(reply)
        except packet.PacketError as exc:
            return self._tampered(f"{where} sent an unreadable answer: {exc}")
        if want in addresses:
            return TamperResult(True, "ours", f"our filter answered through {where}")
        if rcode != packet.NOERROR:
            return self._tampered(f"{where} answered rcode {rcode}, not our filter")
        got = ", ".join(addresses) or "no address"
        return self._tampered(f"{where} answered {got}, not our filter's address")

    def _tampered(self, detail: str) -> TamperResult:
        try:
            seen = self.resolver.current()
        except ResolverError as exc:
            seen = f"unknown ({exc})"
        log.warning("tamper check failed: %s; the system uses %s", detail, seen)
        return TamperResult(False, seen, detail)

    async def _ask(self, host: str, port: int, name: str) -> bytes:
        msg_id = secrets.randbelow(0x10000)
        question = packet.question_bytes(name, packet.A, packet.CLASS_IN)
        query = struct.pack("!6H", msg_id, 0x0100, 1, 0, 0, 0) + question
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        # Connected: only datagrams from the address asked are delivered, and a closed port's
        # ICMP error arrives as ConnectionRefusedError rather than a timeout.
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OneReply(reply, msg_id, question), remote_addr=(host, port)
        )
        try:
            transport.sendto(query)
            async with asyncio.timeout(self.timeout_s):
                return await reply
        finally:
            transport.close()


class _OneReply(asyncio.DatagramProtocol):
    """Resolves `reply` with the first datagram that answers our ID and question."""

    def __init__(self, reply: asyncio.Future[bytes], msg_id: int, question: bytes) -> None:
        self.reply = reply
        self.msg_id = msg_id
        self.question = question

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done() and response.matches(data, self.msg_id, self.question):
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)
