"""What would happen to a query, and why, without sending anything anywhere."""

from __future__ import annotations

from dataclasses import dataclass, replace

from agent.dns.clients.names import known_now
from agent.dns.service import Loaded
from agent.filter import dnscodec, packet
from agent.filter.answer_cache import AnswerCache
from agent.filter.chain import build_chain
from agent.filter.groups import Policy, build_policy
from agent.filter.lists.model import ListMatch
from agent.filter.lists.names import normalise
from agent.filter.request import Pending, Request
from agent.filter.resolvers.forward import Forwarder
from agent.filter.upstreams import Upstreams
from agent.filter.verdict import Kind, Verdict
from common.tomlconfig import toml_value

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
    hostname: str | None = None  # the client's device name a report would carry now
    mac: str | None = None  # and its MAC (lease, static table or ARP)
    # For each of `matches`: why that list line did not decide ("" when it did, or it is an
    # exception), e.g. "outside its schedule" or "allowlisted".
    unapplied: tuple[str, ...] = ()


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
    # As the lists convert it (IDNA 2008, UTS #46): faß.de is asked as xn--fa-hia.de.
    name = normalise(qname) or qname.strip(".").lower()
    q = packet.Query(0, 0x0100, name, qtype, packet.CLASS_IN, packet.question_bytes(name, qtype, 1))
    out: list[Explanation] = []
    known = known_now(config.clients, client) if client is not None else None
    hostname = known.hostname if known is not None else None
    mac = (known.mac or known.arp_mac) if known is not None else None
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
            Explanation(
                name,
                qtype,
                verdict.group,
                client,
                link_name,
                verdict,
                answer,
                matches,
                hostname,
                mac,
            )
        )
    return [replace(e, unapplied=unapplied(loaded, policy, e, now)) for e in out]


def unapplied(loaded: Loaded, policy: Policy, result: Explanation, now: float) -> tuple[str, ...]:
    """Why each matching list line did not decide, in the chain's order (agent/filter/chain.py:
    statutory, the group's allow, its block categories and their schedules); "" for a line
    that decided, or that is an exception."""
    config = loaded.config
    spec = next((g for g in config.groups if g.name == result.group), None)
    group = policy.groups.get(result.group)
    verdict = result.verdict
    out: list[str] = []
    for match in result.matches:
        category = match.category
        decided = verdict.kind is Kind.BLOCKED and verdict.category == category
        if match.exception or decided:
            out.append("")
        elif spec is None or group is None:
            out.append(f"the query was {verdict.kind.value} before any list was read")
        elif category in config.statutory:
            out.append(f"already {verdict.kind.value} by {verdict.rule or result.link}")
        elif category not in spec.block:
            out.append(f"group {spec.name} does not block {category}")
        elif (entry := group.allowed_by(result.qname)) is not None:
            out.append(f"allowlisted: [groups.{spec.name}] allow = {toml_value(entry)}")
        elif any(m.exception and m.category == category for m in result.matches):
            out.append(f"an exception in a {category} list unblocks the name")
        elif not group.block_mask(now) & (1 << loaded.index.categories.index(category)):
            window = dict(spec.schedule)[category].text
            out.append(
                f"outside its schedule: [groups.{spec.name}] schedule.{category} = "
                f"{toml_value(window)}"
            )
        else:
            out.append(f"already {verdict.kind.value} by the {result.link} link")
    return tuple(out)
