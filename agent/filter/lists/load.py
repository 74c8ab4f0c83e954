"""One-shot loading and checking of all lists (startup without a refresher, and `check`)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from agent.filter.lists.copies import slot
from agent.filter.lists.index import CategoryIndex, index_of
from agent.filter.lists.model import ListError, ListSpec, ListStats, is_url
from agent.filter.lists.parser import ParsedList, parse_file
from agent.filter.lists.refresh import ListRefresher

log = logging.getLogger(__name__)


@contextmanager
def readable_copy(spec: ListSpec, cache_dir: Path | None) -> Iterator[Path]:
    """A local file holding the list: the cached copy if there is one (it is what is being
    served), else the source path, else a fresh download into a temporary file."""
    if cache_dir is not None:
        cached = slot(cache_dir, spec.source)
        if cached.read_note() is not None:
            yield cached.data
            return
    if not is_url(spec.source):
        yield Path(spec.source)
        return
    with tempfile.TemporaryDirectory(prefix="hedgerow-list-") as tmp:
        target = Path(tmp) / "list"
        from agent.filter.lists.fetch import fetch  # urllib and ssl: only when downloading

        fetch(spec.source, target)
        yield target


def _parse_each(
    specs: Sequence[ListSpec], cache_dir: Path | None, prefer_source: bool
) -> list[ParsedList]:
    parsed: list[ParsedList] = []
    problems: list[str] = []
    for spec in specs:
        try:
            if prefer_source and not is_url(spec.source):
                parsed.append(parse_file(Path(spec.source), spec.source, spec.category))
                continue
            with readable_copy(spec, cache_dir) as path:
                parsed.append(parse_file(path, spec.source, spec.category))
        except ListError as exc:
            problems.append(str(exc))
    if problems:
        raise ListError("\n".join(problems))
    return parsed


def load_lists(
    specs: Sequence[ListSpec], cache_dir: Path | None
) -> tuple[CategoryIndex, list[ListStats]]:
    """Load every list and build the index; raises ListError naming every list that failed.

    With a cache_dir this is ListRefresher(specs, cache_dir).load(): paths are read (falling
    back to their last good copy), URLs come from the cache or are fetched once. Without one,
    each source is read or fetched directly and nothing is kept.
    """
    if cache_dir is not None:
        return ListRefresher(specs, cache_dir).load()
    parsed = _parse_each(specs, None, prefer_source=True)
    return index_of(specs, parsed), [p.stats for p in parsed]


def check_lists(specs: Sequence[ListSpec], cache_dir: Path | None = None) -> list[ListStats]:
    """Validate every list without serving it: local files are read; URLs are checked from
    the cached copy if there is one, else downloaded. Raises ListError listing all problems."""
    return [p.stats for p in _parse_each(specs, cache_dir, prefer_source=True)]
