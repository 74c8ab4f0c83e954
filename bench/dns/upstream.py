"""The fake upstream resolver: answers every query at once from hand-built bytes.

A gets 192.0.2.1, AAAA gets 2001:db8::1 (documentation addresses, TTL 3600), anything
else NODATA. UDP and TCP on one loopback port. Run it in its own process:
``python -m bench.dns.upstream --port 5354``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import struct
from typing import cast

from bench.dns.dnswire import (
    CLASS_IN,
    RCODE_FORMERR,
    TYPE_A,
    TYPE_AAAA,
    WireError,
    read_question,
)

ANSWER_A = "192.0.2.1"
ANSWER_AAAA = "2001:db8::1"
TTL = 3600
_RR_A = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, TTL, 4)
_RR_A += ipaddress.IPv4Address(ANSWER_A).packed
_RR_AAAA = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_AAAA, CLASS_IN, TTL, 16)
_RR_AAAA += ipaddress.IPv6Address(ANSWER_AAAA).packed
_COUNTS_ANSWER = struct.pack("!HHHH", 1, 1, 0, 0)
_COUNTS_NODATA = struct.pack("!HHHH", 1, 0, 0, 0)


def answer(query: bytes) -> bytes | None:
    """The reply to one query, or None when it is not worth answering (not a query)."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    flags = bytes((0x80 | (query[2] & 0x01), 0x80))  # QR, RD copied; RA; opcode 0
    try:
        question = read_question(query)
    except WireError:
        return query[:2] + bytes((flags[0], 0x80 | RCODE_FORMERR)) + bytes(8)
    head = query[:2] + flags
    body = query[12 : question.end]
    if question.qtype == TYPE_A:
        return head + _COUNTS_ANSWER + body + _RR_A
    if question.qtype == TYPE_AAAA:
        return head + _COUNTS_ANSWER + body + _RR_AAAA
    return head + _COUNTS_NODATA + body


class _Udp(asyncio.DatagramProtocol):
    """Answers each datagram in the callback; nothing is queued."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so cast rather than check.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)


class _Tcp(asyncio.Protocol):
    """Two-byte length framing (RFC 1035 4.2.2); answers as each message completes."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            size = int.from_bytes(self.buffer[:2], "big")
            if len(self.buffer) < 2 + size:
                return
            query, self.buffer = self.buffer[2 : 2 + size], self.buffer[2 + size :]
            reply = answer(query)
            if reply is not None and self.transport is not None:
                self.transport.write(len(reply).to_bytes(2, "big") + reply)


async def serve(host: str, port: int) -> None:
    """Serve UDP and TCP on host:port until cancelled."""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"the fake upstream listens on loopback only, not {host}")
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(_Udp, local_addr=(host, port))
    tcp = await loop.create_server(_Tcp, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        udp.close()
        tcp.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: --host (loopback) and --port."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
