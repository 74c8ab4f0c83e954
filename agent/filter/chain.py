"""The resolver chain: one ordered list of links, built in one place, each link answering a
query or passing it on (Blocky's server.createQueryResolver)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.filter import packet
from agent.filter.answer_cache import Targets
from agent.filter.fastpath import FastPath, FastResult
from agent.filter.groups import CategoryLookup, build_policy
from agent.filter.request import Link, Pending, Request
from agent.filter.resolvers.access import AccessLink
from agent.filter.resolvers.beacon import BeaconLink
from agent.filter.resolvers.blocking import AllowLink, CategoryLink, StatutoryLink, TargetCheck
from agent.filter.resolvers.bypass import BypassLink
from agent.filter.resolvers.forward import CacheLink, Forwarder, UpstreamLink
from agent.filter.resolvers.ratelimit import RateLimitLink, TokenBuckets
from agent.filter.resolvers.safesearch import SafeSearchLink
from agent.filter.response import Stored
from agent.filter.sinkhole import Sinkhole
from agent.filter.spec import FilterSpec
from agent.filter.verdict import Answer, Kind, Verdict

if TYPE_CHECKING:
    from common.wire.signing import SigningKey


class Chain:
    """The links in order; the first that answers wins. `resolve_fast` is the same links
    compiled for the common UDP packets (agent/filter/fastpath.py)."""

    def __init__(self, links: tuple[Link, ...], clock: Callable[[], float], fast: FastPath) -> None:
        self.links = links
        self.clock = clock
        self.fast = fast
        self.resolve_fast: Callable[[bytes, str], FastResult] = fast.resolve

    def resolve(self, request: Request) -> Answer | Pending:
        """Run the request down the links."""
        for link in self.links:
            outcome = link.resolve(request)
            if outcome is not None:
                return outcome
        verdict = Verdict(Kind.SERVFAIL, request.group_name, rule="no link answered")
        return Answer(packet.error(request.query, packet.SERVFAIL), verdict)

    def answer_fetched(
        self, request: Request, fetched: Stored | Exception, targets: Targets | None = None
    ) -> Answer | Pending:
        """The full chain's answer to a cache miss whose upstream reply (or failure) was fetched
        already (the fast path's Miss, when it cannot answer it itself): the links before the
        cache decide, then the upstream link answers with what was fetched."""
        for link in self.links:
            if isinstance(link, UpstreamLink):
                return link.answer_fetched(request, fetched, targets)
            if not isinstance(link, CacheLink):  # it missed: that is why this was fetched
                outcome = link.resolve(request)
                if outcome is not None:
                    return outcome
        return self.resolve(request)

    def decide(self, request: Request) -> tuple[str, Answer | Pending]:
        """The name of the link that answers, and its outcome (for explain)."""
        for link in self.links:
            outcome = link.resolve(request)
            if outcome is not None:
                return link.name, outcome
        return "none", self.resolve(request)


def build_chain(
    spec: FilterSpec,
    index: CategoryLookup,
    forwarder: Forwarder,
    *,
    clock: Callable[[], float],
    beacon_key: SigningKey | None = None,
    buckets: TokenBuckets | None = None,
) -> Chain:
    """The one place that sets the order in which a query meets the policy.

    (Malformed packets never get this far: the server answers FORMERR while parsing.)
    """
    policy = build_policy(spec, index)
    sinkhole = Sinkhole(spec.blocked_answer, spec.blocked_ttl_s)
    # What an answer leads to (CNAME, DNAME, SVCB/HTTPS targets) meets links 2-4 as well.
    targets = TargetCheck(index, sinkhole, policy.sources, policy.statutory_mask)
    links: list[Link] = [
        # 1. Who is asking comes first: outsiders are refused before they cost anything, and
        #    every later link needs the client's group.
        AccessLink(policy.clients),
    ]
    if spec.rate_limit_qps:
        # 1b. Rate limiting before any work an attacker controls (lookups, upstream queries).
        links.append(RateLimitLink(buckets or TokenBuckets.for_spec(spec)))
    links += [
        # 2. Statutory lists (IWF, counter-terrorism) block for everyone, so they sit before
        #    the allowlist: no school setting can let them through.
        StatutoryLink(index, sinkhole, policy.sources, policy.statutory_mask),
        # 3. The group's allowlist, before its categories, so a school can unblock a
        #    wrongly listed site for one group.
        AllowLink(),
        # 4. The group's blocked categories (some only inside their schedule).
        CategoryLink(index, sinkhole, policy.sources),
        # 5. SafeSearch after blocking: a blocked search engine stays blocked, an allowed one
        #    is still made safe.
        SafeSearchLink(forwarder),
        # 6. Anti-bypass rules after SafeSearch (so its HTTPS rule names the rewrite) and
        #    before anything could forward the canaries upstream.
        BypassLink(),
        # 7. The beacon: our own private zone (beacon and self-check names) is answered here
        #    and never forwarded.
        BeaconLink(spec.beacon_site, beacon_key, spec.self_check_key),
        # 8. Only now is the answer worth looking up: the cache, then the upstreams. Both block
        #    an answer whose CNAME, DNAME or SVCB/HTTPS target links 2-4 would block (cloaking),
        #    per group and on every cache hit: the cache is shared and outlives reloads.
        CacheLink(forwarder.cache, targets),
        UpstreamLink(forwarder, targets),
    ]
    # The fast path is these links compiled, in this order; it hands the full chain the rest.
    fast = FastPath(
        links, policy.groups.values(), max_udp_size=spec.max_udp_size, clock=clock
    )
    return Chain(tuple(links), clock, fast)
