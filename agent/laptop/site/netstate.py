"""The network as the netlink events tell it, in our own types: links, addresses and default
routes. It says whether an event changed anything, so that what the kernel merely repeats
(a Wi-Fi link's wireless events, an IPv6 address whose lifetime a router advertisement
refreshed, a default route re-announced) does not start a site check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Link:
    """An interface and the state that matters: administratively up, carrier."""

    index: int
    name: str
    up: bool
    lower_up: bool


@dataclass(frozen=True, slots=True)
class Address:
    """An address on an interface."""

    index: int
    family: int
    address: str
    prefixlen: int


@dataclass(frozen=True, slots=True)
class DefaultRouteFact:
    """A default route (destination length 0) in any table but the local one."""

    family: int
    table: int
    gateway: str | None
    oif: int | None
    priority: int


Fact = Link | Address | DefaultRouteFact


class NetState:
    """Links, addresses and default routes seen so far."""

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.addresses: set[Address] = set()
        self.routes: set[DefaultRouteFact] = set()

    def add(self, fact: Fact) -> bool:
        """Record a new or updated fact; True if the picture changed."""
        if isinstance(fact, Link):
            if self.links.get(fact.index) == fact:
                return False
            self.links[fact.index] = fact
            return True
        if isinstance(fact, Address):
            return _added(self.addresses, fact)
        return _added(self.routes, fact)

    def remove(self, fact: Fact) -> bool:
        """Forget a fact the kernel deleted; True if the picture changed. A deleted link's
        addresses and routes go with it, as they do in the kernel."""
        if isinstance(fact, Link):
            if self.links.pop(fact.index, None) is None:
                return False
            self.addresses = {a for a in self.addresses if a.index != fact.index}
            self.routes = {r for r in self.routes if r.oif != fact.index}
            return True
        if isinstance(fact, Address):
            return _removed(self.addresses, fact)
        return _removed(self.routes, fact)


def _added(facts: set[_T], fact: _T) -> bool:
    if fact in facts:
        return False
    facts.add(fact)
    return True


def _removed(facts: set[_T], fact: _T) -> bool:
    if fact not in facts:
        return False
    facts.discard(fact)
    return True
