"""The last two links: the answer cache, then the upstream resolvers. Both check the names an
answer leads to (CNAME, DNAME, SVCB/HTTPS targets) against the client's group before giving it
(blocking.TargetCheck): an allowed name must not carry a blocked site's address."""

from __future__ import annotations

import logging
import struct

from agent.filter import packet
from agent.filter.answer_cache import AnswerCache, CacheKey, Targets, targets_of
from agent.filter.request import Done, Outcome, Pending, Request
from agent.filter.resolvers.blocking import TargetCheck
from agent.filter.response import Stored, render
from agent.filter.upstreams import UpstreamError, Upstreams
from agent.filter.verdict import Answer, Kind, Verdict

log = logging.getLogger(__name__)


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
        self.keep(key, stored)
        return stored, 0

    def keep(self, key: CacheKey, stored: Stored) -> Targets:
        """Cache a fresh upstream answer with its targets, parsed once here; returns them."""
        targets = targets_of(key, stored) if stored.linked else ()
        self.cache.put(key, stored, targets)
        return targets

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

    def __init__(self, cache: AnswerCache, targets: TargetCheck) -> None:
        self.cache = cache
        self.targets = targets

    def resolve(self, request: Request) -> Outcome:
        """A cached answer (or the blocked answer if it leads to a blocked name), or pass on."""
        q = request.query
        hit = self.cache.lookup((q.qname, q.qtype, q.qclass, q.do))
        if hit is None:
            return None
        stored, age, targets = hit
        if targets:
            blocked = self.targets.check(request, targets)
            if blocked is not None:
                return blocked
        return Answer(render(stored, q, age), _verdict(request, Kind.CACHED))


class UpstreamLink:
    """Asks the upstreams; SERVFAIL when all fail within the timeout."""

    name = "upstream"

    def __init__(self, forwarder: Forwarder, targets: TargetCheck) -> None:
        self.forwarder = forwarder
        self.targets = targets

    def resolve(self, request: Request) -> Outcome:
        """Always answers (later)."""
        return Pending(
            _verdict(request, Kind.RESOLVED),
            lambda: self._ask(request),
            lambda done: self._start(request, done),
        )

    async def _ask(self, request: Request) -> Answer:
        q = request.query
        try:
            stored = await self.forwarder.upstreams.ask(q.qname, q.qtype, q.qclass, q.do)
        except UpstreamError as exc:
            return self._failed(request, exc)
        return self.answer_fetched(request, stored)

    def _start(self, request: Request, done: Done) -> None:
        """The cache-miss path without a task or future: the upstream pool's callback answers."""
        q = request.query
        self.forwarder.upstreams.ask_then(
            (q.qname, q.qtype, q.qclass, q.do),
            lambda fetched: done(self.answer_fetched(request, fetched)),
        )

    def answer_fetched(
        self, request: Request, fetched: Stored | Exception, targets: Targets | None = None
    ) -> Answer:
        """The answer to a miss once its upstream reply (or failure) is in hand: SERVFAIL when
        every upstream failed, else the reply kept in the cache (here, unless the caller kept
        it already and passes its `targets`) and checked for blocked targets."""
        q = request.query
        if isinstance(fetched, UpstreamError):
            return self._failed(request, fetched)
        if isinstance(fetched, Exception):
            log.error("answering %s failed: %r", q.qname, fetched)
            verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="internal error")
            return Answer(packet.error(q, packet.SERVFAIL), verdict)
        if targets is None:
            targets = self.forwarder.keep((q.qname, q.qtype, q.qclass, q.do), fetched)
        if targets:
            blocked = self.targets.check(request, targets)
            if blocked is not None:
                return blocked
        return Answer(render(fetched, q), _verdict(request, Kind.RESOLVED))

    @staticmethod
    def _failed(request: Request, exc: UpstreamError) -> Answer:
        verdict = Verdict(Kind.SERVFAIL, request.group_name, rule=str(exc))
        return Answer(packet.error(request.query, packet.SERVFAIL), verdict)
