"""One question on its way to the upstreams, and what the carriers that move it (the UDP pool,
the TCP and TLS connections) and the one that decides (upstreams.py) say to each other.

An Exchange is the only object a cache miss makes on the way out (with its waiters' futures):
no task, no timer, no socket of its own. The carriers hold it by its DNS ID until an answer
with that ID and its question arrives, or until upstreams.py's sweep times it out.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from typing import Protocol

from agent.filter import packet
from agent.filter.response import Stored

_QUERY_HEAD = struct.Struct("!6H")
_OPT = (packet.opt_record(False), packet.opt_record(True))  # our EDNS record, by DO bit
_ID_BATCH = 1024  # random IDs drawn from the OS at once (one getrandom call, not 1024)


class Carrier(Protocol):
    """What moves queries to one server: UdpPool or StreamPool."""

    def send(self, exchange: Exchange) -> None:
        """Send the exchange's question; the answer (or failure) comes back to the Receiver."""
        ...

    def forget(self, exchange: Exchange) -> None:
        """Stop waiting for the exchange's answer (it timed out): a late one is unmatched."""
        ...

    def sweep(self, now: float) -> bool:
        """Close what has been idle too long; True while something is still open."""
        ...

    def close(self) -> None:
        """Close everything at once; exchanges in flight are the caller's to fail."""
        ...


class Receiver(Protocol):
    """Where a carrier hands what became of an exchange (upstreams.Upstreams)."""

    def answered(self, exchange: Exchange, data: bytes, cut: bool) -> None:
        """A reply with the exchange's ID and question; `cut`: longer than we could read."""
        ...

    def failed(self, exchange: Exchange, problem: str) -> None:
        """The server could not be asked (e.g. ConnectionRefusedError): try the next one."""
        ...


class Exchange:
    """A question in flight: who waits for it, which server it is at, until when."""

    __slots__ = (
        "attempt_deadline",
        "callbacks",
        "carrier",
        "deadline",
        "do",
        "done",
        "key",
        "msg_id",
        "position",
        "problem",
        "qname",
        "question",
        "resent",
        "slot",
        "tcp",
        "waiters",
    )

    def __init__(self, key: tuple[str, int, int, bool], question: bytes, deadline: float) -> None:
        self.key = key  # (qname, qtype, qclass, DO): what identical questions in flight share
        self.qname = key[0]
        self.do = key[3]
        self.question = question  # the question section as sent, for matching replies
        self.deadline = deadline  # loop time by which it is answered or failed
        self.attempt_deadline = deadline  # this server's share of what is left
        self.position = 0  # index of the server being asked
        self.msg_id = 0  # the ID of the query in flight (chosen by the carrier)
        self.carrier: Carrier | None = None  # who holds it now
        self.resent = False  # sent again on a new connection after one closed under it
        self.tcp = False  # this server's UDP answer was truncated: asked again over TCP
        self.problem = ""  # why the last server failed
        self.slot = -1  # the timer wheel's slot of this attempt's deadline (-1: none)
        self.done = False
        self.waiters: list[asyncio.Future[Stored]] = []
        # Callers told straight from the carrier's callback (Upstreams.ask_then), no future.
        self.callbacks: list[Callable[[Stored | Exception], None]] = []


class RandomIds:
    """Random 16-bit DNS IDs from the operating system's CSPRNG (what `secrets` uses), drawn
    _ID_BATCH at a time: one system call per 1024 queries instead of one per query."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: list[int] = []

    def next(self) -> int:
        """A fresh random ID."""
        ids = self._ids
        if not ids:
            ids.extend(memoryview(os.urandom(2 * _ID_BATCH)).cast("H"))
        return ids.pop()


def query_wire(exchange: Exchange, msg_id: int) -> bytes:
    """The recursive query for the exchange with this ID (packet.query_message, from the
    question bytes the exchange already holds)."""
    head = _QUERY_HEAD.pack(msg_id, 0x0100, 1, 0, 0, 1)
    return head + exchange.question + _OPT[exchange.do]
