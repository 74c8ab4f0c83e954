"""Which rule of which list matches a name: the slow path behind `hedgerow-dns explain`.

It re-reads each list (the cached last good copy when there is one, as that is what is
being served) with the same per-line parser the index was built with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.filter.lists.load import readable_copy
from agent.filter.lists.model import (
    EXCEPT,
    SELF_BLOCK,
    SELF_EXCEPT,
    SUB_BLOCK,
    SUB_EXCEPT,
    ListError,
    ListMatch,
    ListSpec,
)
from agent.filter.lists.names import normalise, suffixes
from agent.filter.lists.parser import read_lines
from agent.filter.lists.rules import detect_format, parse_line


def explain(qname: str, specs: Sequence[ListSpec], cache_dir: Path | None) -> list[ListMatch]:
    """Every rule (blocks and exceptions) in every list that matches qname, with line numbers,
    in spec then line order. Raises ListError if the name is invalid or a list unreadable."""
    name = normalise(qname)
    if name is None:
        raise ListError(f"{qname!r} is not a valid DNS name")
    matches: list[ListMatch] = []
    for spec in specs:
        with readable_copy(spec, cache_dir) as path:
            matches.extend(_scan(name, spec, path))
    return matches


def _scan(name: str, spec: ListSpec, path: Path) -> list[ListMatch]:
    wanted = {suffix: (SUB_BLOCK | SUB_EXCEPT) for suffix in suffixes(name)}
    wanted[name] = SELF_BLOCK | SELF_EXCEPT
    tld = name.rsplit(".", 1)[-1]
    found: list[ListMatch] = []
    fmt: str | None = None
    number = 0
    for text in read_lines(path, spec.source):
        if fmt is None:
            fmt = detect_format(text[: 1 << 16])
        for line in text.split("\n")[:-1]:
            number += 1
            # Cheap filter: a matching rule names the TLD (or is IDN, or upper-case).
            if tld not in line and line.isascii() and line.islower():
                continue
            for entry, kind in parse_line(fmt, line).entries:
                if kind & wanted.get(entry, 0):
                    found.append(
                        ListMatch(
                            spec.category, spec.source, number, line.strip(), bool(kind & EXCEPT)
                        )
                    )
                    break
    return found
