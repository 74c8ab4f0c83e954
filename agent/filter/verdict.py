"""Why each answer is what it is: one value that logs, metrics, reports and explain all read
(Blocky's model.ResponseType plus reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What happened to a query."""

    RESOLVED = "resolved"  # answered by an upstream
    CACHED = "cached"  # answered from the cache
    BLOCKED = "blocked"  # a category list blocked the name
    FILTERED = "filtered"  # a policy rule withheld records (ECH, SafeSearch HTTPS)
    REWRITTEN = "rewritten"  # SafeSearch / YouTube CNAME
    BYPASS = "bypass"  # an anti-bypass name (DoH canary, Private Relay, DDR)
    BEACON = "beacon"  # the signed on-site beacon
    REFUSED = "refused"  # outside allow_clients, rate limited, or an unsupported class
    SERVFAIL = "servfail"  # every upstream failed
    FORMERR = "formerr"  # the query could not be read
    NOTIMP = "notimp"  # an opcode other than QUERY


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one query and the reason for it."""

    kind: Kind
    group: str = ""
    category: str | None = None
    rule: str | None = None  # which list, allow entry or policy rule decided
    # (verdict, category, group): the metrics key, computed once per verdict, not per query.
    labels: tuple[str, str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", (self.kind.value, self.category or "", self.group))

    def describe(self) -> str:
        """One line for logs and explain, e.g. 'blocked (group pupils, category gambling, ...)'."""
        parts = [f"group {self.group}"] if self.group else []
        if self.category:
            parts.append(f"category {self.category}")
        if self.rule:
            parts.append(f"rule {self.rule}")
        return f"{self.kind.value} ({', '.join(parts)})" if parts else self.kind.value


@dataclass(frozen=True, slots=True)
class Answer:
    """A finished reply and the verdict behind it."""

    wire: bytes
    verdict: Verdict
