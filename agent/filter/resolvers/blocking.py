"""List blocking in three links: statutory lists, then the group's allowlist, then the group's
blocked categories (with schedules). The name is looked up in the index once per query."""

from __future__ import annotations

from agent.filter import packet
from agent.filter.groups import CategoryLookup
from agent.filter.request import Outcome, Request
from agent.filter.sinkhole import Sinkhole
from agent.filter.verdict import Answer, Kind, Verdict


def _hits(request: Request, index: CategoryLookup) -> int:
    if request.hits < 0:
        request.hits = index.lookup(request.query.qname)
    return request.hits


def _first(index: CategoryLookup, mask: int) -> str:
    low = mask & -mask
    return index.categories[low.bit_length() - 1]


class _Blocker:
    def __init__(self, index: CategoryLookup, sinkhole: Sinkhole, sources: dict[str, str]):
        self.index = index
        self.sinkhole = sinkhole
        self.sources = sources

    def block(self, request: Request, mask: int, statutory: bool) -> Answer:
        category = _first(self.index, mask)
        rule = self.sources.get(category, category)
        verdict = Verdict(Kind.BLOCKED, request.group_name, category, rule)
        text = f"blocked: {category}" + (" (statutory)" if statutory else "")
        return Answer(self.sinkhole.reply(request.query, (packet.EDE_BLOCKED, text)), verdict)


class StatutoryLink(_Blocker):
    """Statutory lists (e.g. IWF) block for every group; no allow entry can undo them."""

    name = "statutory"

    def __init__(
        self, index: CategoryLookup, sinkhole: Sinkhole, sources: dict[str, str], mask: int
    ) -> None:
        super().__init__(index, sinkhole, sources)
        self.mask = mask

    def resolve(self, request: Request) -> Outcome:
        """Block if a statutory category lists the name."""
        if not self.mask:
            return None
        hit = _hits(request, self.index) & self.mask
        return self.block(request, hit, True) if hit else None


class AllowLink:
    """Notes the group's allow entry covering the name, so category blocking skips it."""

    name = "allow"

    def resolve(self, request: Request) -> Outcome:
        """Never answers; marks the request."""
        if request.group is not None:
            request.allowed_by = request.group.allowed_by(request.query.qname)
        return None


class CategoryLink(_Blocker):
    """The group's blocked categories, each always or inside its schedule."""

    name = "category"

    def resolve(self, request: Request) -> Outcome:
        """Block if the name is in a category this group blocks right now."""
        group = request.group
        if group is None or request.allowed_by is not None:
            return None
        mask = group.block_mask(request.now)
        if not mask:
            return None
        hit = _hits(request, self.index) & mask
        return self.block(request, hit, False) if hit else None
