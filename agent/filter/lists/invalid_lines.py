"""Where a list's invalid lines are: the line numbers `hedgerow-dns check` shows, so the
network manager can open the file at the first few bad lines.

The parser keeps only counts (its bulk path never looks at lines one by one), so this reads
the file again with the same per-line parser, and only for a list that has invalid lines; it
stops at the `limit`-th one.
"""

from __future__ import annotations

from pathlib import Path

from agent.filter.lists.parser import read_lines
from agent.filter.lists.rules import detect_format, parse_line

FIRST_FEW = 5


def invalid_lines(path: Path, source: str, limit: int = FIRST_FEW) -> tuple[int, ...]:
    """The 1-based numbers of the first `limit` lines the parser counts as invalid."""
    found: list[int] = []
    fmt: str | None = None
    number = 0
    for text in read_lines(path, source):
        if fmt is None:
            fmt = detect_format(text[: 1 << 16])  # as parse_file detects it
        for line in text.split("\n")[:-1]:
            number += 1
            if parse_line(fmt, line).invalid:
                found.append(number)
                if len(found) >= limit:
                    return tuple(found)
    return tuple(found)
