"""The last two links: the answer cache, then the upstream resolvers."""

from __future__ import annotations

import struct

from agent.filter import packet
from agent.filter.answer_cache import AnswerCache
from agent.filter.request import Outcome, Pending, Request
from agent.filter.response import Stored, render
from agent.filter.upstreams import UpstreamError, Upstreams
from agent.filter.verdict import Answer, Kind, Verdict


class Forwarder:
    """The cache in front of the upstreams, shared by the cache, upstream and SafeSearch links."""

    def __init__(self, cache: AnswerCache, upstreams: Upstreams) -> None:
        self.cache = cache
        self.upstreams = upstreams

    async def fetch(self, qname: str, qtype: int, qclass: int, do: bool) -> tuple[Stored, int]:
        """A stored answer and its age: from the cache, else asked upstream and cached."""
        key = (qname, qtype, qclass, do)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        stored = await self.upstreams.ask(qname, qtype, qclass, do)
        self.cache.put(key, stored)
        return stored, 0

    @staticmethod
    def full_message(stored: Stored, qname: str, qtype: int, qclass: int) -> bytes:
        """The stored answer as a whole message again (for decoding compressed names)."""
        an, ns, ar = stored.counts
        head = struct.pack("!6H", 0, 0x8180 | (stored.rcode & 0xF), 1, an, ns, ar)
        return head + packet.question_bytes(qname, qtype, qclass) + stored.body


def _verdict(request: Request, kind: Kind) -> Verdict:
    rule = f"allow {request.allowed_by}" if request.allowed_by else None
    return Verdict(kind, request.group_name, rule=rule)


class CacheLink:
    """Answers from the cache, TTLs counted down."""

    name = "cache"

    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    def resolve(self, request: Request) -> Outcome:
        """A cached answer, or pass on."""
        q = request.query
        hit = self.cache.get((q.qname, q.qtype, q.qclass, q.do))
        if hit is None:
            return None
        return Answer(render(hit[0], q, hit[1]), _verdict(request, Kind.CACHED))


class UpstreamLink:
    """Asks the upstreams; SERVFAIL when all fail within the timeout."""

    name = "upstream"

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def resolve(self, request: Request) -> Outcome:
        """Always answers (later)."""
        return Pending(_verdict(request, Kind.RESOLVED), lambda: self._ask(request))

    async def _ask(self, request: Request) -> Answer:
        q = request.query
        try:
            stored = await self.forwarder.upstreams.ask(q.qname, q.qtype, q.qclass, q.do)
        except UpstreamError as exc:
            verdict = Verdict(Kind.SERVFAIL, request.group_name, rule=str(exc))
            return Answer(packet.error(q, packet.SERVFAIL), verdict)
        self.forwarder.cache.put((q.qname, q.qtype, q.qclass, q.do), stored)
        return Answer(render(stored, q), _verdict(request, Kind.RESOLVED))
