"""SafeSearch and YouTube restriction: a CNAME to the vendor's safe front end, with the
target's records (from the cache or the upstream) in the same answer."""

from __future__ import annotations

from agent.filter import packet
from agent.filter.request import Outcome, Pending, Request
from agent.filter.resolvers.forward import Forwarder
from agent.filter.safesearch_targets import YOUTUBE_TARGETS
from agent.filter.upstreams import UpstreamError
from agent.filter.verdict import Answer, Kind, Verdict

CNAME_TTL = 300
_YOUTUBE = frozenset(YOUTUBE_TARGETS.values())


class SafeSearchLink:
    """Rewrites the group's search and video names; HTTPS/SVCB for them get NODATA, since
    their address hints would lead browsers past the rewrite."""

    name = "safesearch"

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def resolve(self, request: Request) -> Outcome:
        """Rewrite if the name is one of the group's SafeSearch names."""
        group = request.group
        if group is None or not group.rewrites:
            return None
        target = group.rewrites.get(request.query.qname)
        if target is None:
            return None
        category = "youtube" if target in _YOUTUBE else "safesearch"
        q = request.query
        if q.qtype in (packet.HTTPS, packet.SVCB):
            verdict = Verdict(
                Kind.FILTERED, group.name, category, f"HTTPS/SVCB withheld ({target})"
            )
            ede = (packet.EDE_FILTERED, "filtered: SafeSearch")
            return Answer(packet.nodata(q, ede), verdict)
        verdict = Verdict(Kind.REWRITTEN, group.name, category, f"CNAME {target}")
        return Pending(verdict, lambda: self._rewrite(request, target, verdict))

    async def _rewrite(self, request: Request, target: str, verdict: Verdict) -> Answer:
        q = request.query
        try:
            stored, age = await self.forwarder.fetch(target, q.qtype, q.qclass, q.do)
            message = self.forwarder.full_message(stored, target, q.qtype, q.qclass)
            from agent.filter import dnscodec  # dnslib: loaded with the first rewrite

            records, count = dnscodec.answer_records(message, age)
        except (UpstreamError, packet.PacketError) as exc:
            failed = Verdict(Kind.SERVFAIL, verdict.group, verdict.category, str(exc))
            return Answer(packet.error(q, packet.SERVFAIL), failed)
        cname = packet.rr(packet.CNAME, CNAME_TTL, packet.encode_name(target))
        wire = packet.build(q, stored.rcode, cname + records, (1 + count, 0, 0))
        return Answer(wire, verdict)
