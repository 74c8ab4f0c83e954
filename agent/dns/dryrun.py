"""What would happen to a query, and why, without sending anything anywhere."""

from __future__ import annotations

from dataclasses import dataclass

from agent.dns.service import Loaded
from agent.filter import dnscodec, packet
from agent.filter.answer_cache import AnswerCache
from agent.filter.chain import build_chain
from agent.filter.groups import build_policy
from agent.filter.lists.model import ListMatch
from agent.filter.request import Pending, Request
from agent.filter.resolvers.forward import Forwarder
from agent.filter.upstreams import Upstreams
from agent.filter.verdict import Verdict

SKIP_WITHOUT_CLIENT = frozenset({"access", "rate_limit"})


@dataclass(frozen=True, slots=True)
class Explanation:
    """The decision on one name for one group (or client)."""

    qname: str
    qtype: int
    group: str
    client: str | None
    link: str  # the chain link that decided
    verdict: Verdict
    answer: str  # the reply in dig-like text, or what would be asked upstream
    matches: tuple[ListMatch, ...] = ()


def explain_query(
    loaded: Loaded,
    qname: str,
    qtype: int,
    now: float,
    client: str | None = None,
    matches: tuple[ListMatch, ...] = (),
) -> list[Explanation]:
    """Explain for the client's group, or for every group when no client is given."""
    config = loaded.config
    forwarder = Forwarder(AnswerCache(0, 0), Upstreams(config.upstream))
    chain = build_chain(config.spec, loaded.index, forwarder, clock=lambda: now)
    name = qname.strip(".").lower()
    q = packet.Query(0, 0x0100, name, qtype, packet.CLASS_IN, packet.question_bytes(name, qtype, 1))
    out: list[Explanation] = []
    if client is not None:
        targets: list[tuple[str | None, frozenset[str]]] = [(None, frozenset())]
    else:
        targets = [(g.name, SKIP_WITHOUT_CLIENT) for g in config.groups]
    policy = build_policy(config.spec, loaded.index)
    for group_name, skip in targets:
        request = Request(q, client or "", "udp", now)
        if group_name is not None:
            request.group = policy.groups[group_name]
        link_name, outcome = "none", None
        for link in chain.links:
            if link.name in skip:
                continue
            outcome = link.resolve(request)
            if outcome is not None:
                link_name = link.name
                break
        assert outcome is not None  # the upstream link always answers
        if isinstance(outcome, Pending):
            answer = f"forwarded: {outcome.verdict.rule or 'asked upstream'}"
            if link_name == "upstream":
                servers = ", ".join(s.text for s in config.upstream.servers)
                answer = f"forwarded to {servers} (not asked by explain)"
            verdict = outcome.verdict
        else:
            answer = dnscodec.describe(outcome.wire)
            verdict = outcome.verdict
        out.append(
            Explanation(name, qtype, verdict.group, client, link_name, verdict, answer, matches)
        )
    return out
