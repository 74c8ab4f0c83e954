"""The values the list package hands to the server: specs, statistics, matches and status."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import HedgerowError
from common.filter_rules import url_problem
from common.tomlconfig import toml_value

# The four rule kinds, as bit planes of an index entry. A plain entry blocks the name and its
# subdomains (SELF | SUB); `*.name` blocks only subdomains (SUB); `@@||name^` excepts both.
SELF_BLOCK = 1
SUB_BLOCK = 2
SELF_EXCEPT = 4
SUB_EXCEPT = 8
BLOCK = SELF_BLOCK | SUB_BLOCK
WILDCARD = SUB_BLOCK
EXCEPT = SELF_EXCEPT | SUB_EXCEPT
EXCEPT_WILDCARD = SUB_EXCEPT


class ListError(HedgerowError):
    """A list cannot be used; the message names the list source and the problem."""


class StaleIndex(ListError):
    """The compiled index is not the one the current lists build, and parsing was not wanted
    (a reload whose child build was overtaken by a list change: agent/dns/prebuild.py)."""


def is_url(source: str) -> bool:
    """True if the source is fetched over HTTP(S) rather than read from a path."""
    return source.startswith(("https://", "http://"))


@dataclass(frozen=True, slots=True)
class ListSpec:
    """One [[lists]] entry of the config: a category fed by a path or an https URL."""

    category: str
    source: str
    statutory: bool = False
    refresh_h: int = 24

    def __post_init__(self) -> None:
        if not self.category or not self.category.strip():
            raise ListError(f"list {self.source}: category must not be empty")
        if not self.source:
            raise ListError(
                f"list for category {toml_value(self.category)}: source must not be empty"
            )
        if self.refresh_h < 1:
            raise ListError(f"list {self.source}: refresh_h = {self.refresh_h}: must be at least 1")
        if is_url(self.source):
            problem = url_problem(self.source)
            if problem:
                raise ListError(f"list {self.source}: {problem}")


@dataclass(frozen=True, slots=True)
class ListStats:
    """What parsing one list found. `entries` counts block rules, `exceptions` the @@ rules,
    `skipped` unsupported rules (cosmetic, paths, modifiers, IPs), `invalid` bad names."""

    source: str
    category: str
    format: str
    entries: int
    exceptions: int
    skipped: int
    invalid: int


@dataclass(frozen=True, slots=True)
class ListMatch:
    """One rule of one list that matches a name, for `hedgerow-dns explain`."""

    category: str
    source: str
    line: int
    rule: str
    exception: bool


@dataclass(frozen=True, slots=True)
class ListStatus:
    """How one list is being served: from where, since when, and why the last refresh was
    refused (if it was). `problem` is None when the last attempt succeeded."""

    source: str
    category: str
    entries: int
    serving_from: str  # "source" or "cache"
    loaded_at: float  # epoch seconds of the copy being served
    checked_at: float  # epoch seconds of the last refresh attempt
    problem: str | None = None
