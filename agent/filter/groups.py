"""Groups at run time: which client is in which group, and what each group blocks right now."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent.filter.safesearch_targets import targets_for
from agent.filter.schedule import Schedule
from agent.filter.spec import FilterSpec, GroupSpec, Network

MEMO_LIMIT = 65_536


class CategoryLookup(Protocol):
    """What the policy needs from the lists package's CategoryIndex."""

    @property
    def categories(self) -> tuple[str, ...]:
        """Category names; bit i of a mask is categories[i]."""
        ...

    def lookup(self, qname: str) -> int:
        """Bitmask of the categories that block this normalised name."""
        ...


def mask_of(index: CategoryLookup, categories: Iterable[str]) -> int:
    """The bitmask of the named categories (names the index does not know give no bits)."""
    mask = 0
    for position, name in enumerate(index.categories):
        if name in categories:
            mask |= 1 << position
    return mask


@dataclass(slots=True)
class GroupPolicy:
    """One group compiled against the list index. Mutable only in its per-minute memo."""

    name: str
    always_mask: int
    scheduled: tuple[tuple[int, Schedule], ...]
    allow: frozenset[str]
    rewrites: dict[str, str]
    block_ech: bool
    block_bypass: bool
    block_encrypted_dns: bool
    _minute: int = field(default=-1, repr=False)
    _mask: int = field(default=0, repr=False)

    def block_mask(self, now: float) -> int:
        """Categories blocked at epoch time `now` (schedules read local time, once a minute)."""
        if not self.scheduled:
            return self.always_mask
        minute = int(now // 60)
        if minute != self._minute:
            local = datetime.fromtimestamp(now)
            mask = self.always_mask
            for bits, schedule in self.scheduled:
                if schedule.active(local):
                    mask |= bits
            self._minute, self._mask = minute, mask
        return self._mask

    def allowed_by(self, qname: str) -> str | None:
        """The allow entry covering `qname` (itself or a parent domain), if any."""
        if not self.allow:
            return None
        name = qname
        while True:
            if name in self.allow:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]


def compile_group(group: GroupSpec, index: CategoryLookup) -> GroupPolicy:
    """Turn a configured group into masks and lookup tables."""
    scheduled_names = {category for category, _ in group.schedule}
    always = [c for c in group.block if c not in scheduled_names]
    return GroupPolicy(
        name=group.name,
        always_mask=mask_of(index, always),
        scheduled=tuple((mask_of(index, [c]), s) for c, s in group.schedule),
        allow=frozenset(group.allow),
        rewrites=targets_for(group.safesearch, group.youtube),
        block_ech=group.block_ech,
        block_bypass=group.block_bypass,
        block_encrypted_dns=group.block_encrypted_dns,
    )


class ClientTable:
    """Maps a client address to its group, or None when it is outside allow_clients.

    The most specific `clients` range wins; results are memoised per address because the
    ipaddress module costs microseconds and schools have a bounded number of clients.
    """

    def __init__(
        self,
        allow: tuple[Network, ...],
        ranges: list[tuple[Network, GroupPolicy]],
        default: GroupPolicy,
    ) -> None:
        self._allow = allow
        self._ranges = sorted(ranges, key=lambda pair: -pair[0].prefixlen)
        self._default = default
        self._memo: dict[str, GroupPolicy | None] = {}

    def classify(self, client: str) -> GroupPolicy | None:
        """The client's group, or None if it may not use this resolver."""
        try:
            return self._memo[client]
        except KeyError:
            pass
        result = self._classify(client)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[client] = result
        return result

    def _classify(self, client: str) -> GroupPolicy | None:
        try:
            address = ipaddress.ip_address(client.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not any(address in net for net in self._allow):
            return None
        for net, group in self._ranges:
            if address in net:
                return group
        return self._default


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the chain's policy links read, built once per (re)load."""

    clients: ClientTable
    groups: dict[str, GroupPolicy]
    index: CategoryLookup
    statutory_mask: int
    sources: dict[str, str]  # category -> its list source(s), for verdicts


def build_policy(spec: FilterSpec, index: CategoryLookup) -> Policy:
    """Compile groups and client ranges for this spec and list index."""
    groups = {g.name: compile_group(g, index) for g in spec.groups}
    ranges = [(net, groups[g.name]) for g in spec.groups for net in g.clients]
    sources: dict[str, list[str]] = {}
    for listed in spec.lists:
        sources.setdefault(listed.category, []).append(listed.source)
    return Policy(
        clients=ClientTable(spec.allow_clients, ranges, groups[spec.default_group]),
        groups=groups,
        index=index,
        statutory_mask=mask_of(index, spec.statutory),
        sources={c: ", ".join(s) for c, s in sources.items()},
    )


# The default clock: epoch seconds (time.time itself: the hot path calls it).
wall_clock: Callable[[], float] = time.time


Clock = Callable[[], float]
