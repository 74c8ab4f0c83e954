"""List blocking in three links: statutory lists, then the group's allowlist, then the group's
blocked categories (with schedules). The name is looked up in the index once per query.

TargetCheck applies the same policy to the names an upstream answer leads to (CNAME cloaking):
the cache and upstream links ask it for every answer they give, cached or fresh."""

from __future__ import annotations

from agent.filter import packet
from agent.filter.groups import CategoryLookup, GroupPolicy
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

    def block(self, request: Request, mask: int, statutory: bool, via: str | None = None) -> Answer:
        category = _first(self.index, mask)
        rule = self.sources.get(category, category)
        if via is not None:
            rule = f"{rule} via {via}"
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


TARGET_MEMO = 8_192  # category masks of recent target names (~1 MB at most)


class TargetCheck(_Blocker):
    """The policy for the names an answer leads to (CNAME, DNAME, SVCB/HTTPS targets): each is
    judged as a question of the same client would be, and one blocked target blocks the whole
    answer with the blocked answer for the question (Blocky's and Pi-hole's CNAME inspection).

    Statutory lists block a target whatever allows it. A target on the group's allowlist is not
    checked against the group's categories; nor are an allowlisted question's targets, as in
    Blocky and Pi-hole: the school vouched for that name, and otherwise a site whose CDN name is
    listed could only be allowed by unblocking the CDN name for every direct query too. The
    verdict is the target's category, its rule names the list and the target. Not a link:
    the cache and upstream links call it, and the fast path calls find() for cached answers."""

    def __init__(
        self, index: CategoryLookup, sinkhole: Sinkhole, sources: dict[str, str], statutory: int
    ) -> None:
        super().__init__(index, sinkhole, sources)
        self.statutory = statutory
        self._masks: dict[str, int] = {}

    def mask(self, target: str) -> int:
        """The categories listing a target name (memoised: the same CDN names recur)."""
        masks = self._masks
        mask = masks.get(target)
        if mask is None:
            mask = self.index.lookup(target)
            if len(masks) >= TARGET_MEMO:
                masks.clear()
            masks[target] = mask
        return mask

    def find(
        self, group: GroupPolicy | None, blocking: int, targets: tuple[str, ...]
    ) -> tuple[int, str] | None:
        """(hit mask, target) of the first blocked target, or None. `blocking`: the group's
        categories blocked now for this question (0 if the question is allowlisted)."""
        for target in targets:
            mask = self.mask(target)
            if not mask:
                continue
            hit = mask & self.statutory
            if (
                not hit
                and mask & blocking
                and group is not None
                and group.allowed_by(target) is None
            ):
                hit = mask & blocking
            if hit:
                return hit, target
        return None

    def check(self, request: Request, targets: tuple[str, ...]) -> Answer | None:
        """The blocked answer if a target of this answer is blocked for the client, else None."""
        if not targets:
            return None
        group = request.group
        blocking = 0
        if group is not None and request.allowed_by is None:
            blocking = group.block_mask(request.now)
        found = self.find(group, blocking, targets)
        if found is None:
            return None
        hit, target = found
        return self.block(request, hit, bool(hit & self.statutory), via=target)
