"""Data the filter engine ships inside the package (package data in pyproject.toml), each file
with a header saying where it came from and how to refresh it:

- `google_domains.txt`: Google's search domains (https://www.google.com/supported_domains),
  refreshed by scripts/refresh_google_domains.py;
- `encrypted_dns.txt`: the built-in, versioned list of public encrypted-DNS resolvers that the
  anti-bypass link blocks by default.

A broken file is a bug in the release, so reading one raises ValueError naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from agent.filter.lists.names import normalise

GOOGLE_DOMAINS = "google_domains.txt"
ENCRYPTED_DNS = "encrypted_dns.txt"
_GOOGLE_LINE = re.compile(r"\.google\.([a-z]{2,3}(?:\.[a-z]{2})?)")
_VERSION_LINE = re.compile(r"version ([0-9A-Za-z.-]+)")


@dataclass(frozen=True, slots=True)
class ResolverList:
    """The built-in encrypted-DNS list: its version and its names (each with everything below)."""

    version: str
    names: frozenset[str]

    def match(self, qname: str) -> str | None:
        """The listed name that is qname or a parent of it, if any."""
        name = qname
        while True:
            if name in self.names:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]


def _lines(filename: str) -> list[tuple[int, str]]:
    """(line number, text) of the file's lines that are neither blank nor comments."""
    text = (Path(__file__).parent / filename).read_text(encoding="utf-8")  # package data
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


@cache
def google_suffixes() -> tuple[str, ...]:
    """What follows `google.` in each of Google's search domains ("com", "co.uk", "ae"...), in
    the file's order."""
    out: list[str] = []
    for number, line in _lines(GOOGLE_DOMAINS):
        found = _GOOGLE_LINE.fullmatch(line)
        if found is None or found.group(1) in out:
            raise ValueError(f"{GOOGLE_DOMAINS} line {number}: {line!r} is not a new .google.<tld>")
        out.append(found.group(1))
    return tuple(out)


@cache
def encrypted_dns() -> ResolverList:
    """The built-in list of public encrypted-DNS resolver names, with its version."""
    lines = _lines(ENCRYPTED_DNS)
    version = _VERSION_LINE.fullmatch(lines[0][1]) if lines else None
    if version is None:
        raise ValueError(
            f"{ENCRYPTED_DNS}: the first line that is not a comment must be 'version X'"
        )
    names: set[str] = set()
    for number, line in lines[1:]:
        name = normalise(line)
        if name is None or name != line or name in names:
            raise ValueError(
                f"{ENCRYPTED_DNS} line {number}: {line!r} is not a new, normalised name"
            )
        names.add(name)
    return ResolverList(version.group(1), frozenset(names))
