"""ListRefresher: keeps every list's last good copy and refreshes lists off the hot path.

The server calls `load()` once at startup and then, every few minutes, has a child process
run `refresh()` on a refresher started from its state and `adopt()`s the outcome
(agent/dns/prebuild.py; `refresh()` in a worker thread if no child can run); `refresh()` only
fetches lists whose refresh_h has passed, and returns the index to serve. A refresh that fails, comes back empty, truncated, unparseable,
or with fewer than `min_ratio` of the last good copy's entries is refused: the old copy keeps
serving, a warning is logged and `status()` carries the reason. Reload is all-or-nothing.

After each build the index is also written to the cache directory compiled (snapshot.py);
`load()` serves that copy instead of parsing when every list's copy is byte-for-byte the one
it was built from and the process hashes with the installation's seed (hashseed.py).

`load(missing_ok=True)` (the server's first start) serves without a list that has no usable
copy at all rather than raising: its status says `serving_from = "missing"`, `due()` retries it
with backoff (RETRY_FIRST_S doubling up to RETRY_MAX_S) and the first good copy is built in.
No compiled index is written while a list is missing (it would not be that of the config).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from agent.filter.hashseed import pinned
from agent.filter.lists import snapshot
from agent.filter.lists.copies import CacheNote, CacheSlot, copy_file, slot
from agent.filter.lists.index import CategoryIndex, ChildBuildFailed, index_of
from agent.filter.lists.model import (
    ListError,
    ListSpec,
    ListStats,
    ListStatus,
    StaleIndex,
    is_url,
)
from agent.filter.lists.parser import ParsedList, parse_file

log = logging.getLogger(__name__)

RETRY_FIRST_S = 2.0  # a missing list is tried again after this, then after twice as long...
RETRY_MAX_S = 900.0  # ...up to every 15 minutes
MISSING = "missing"  # ListStatus.serving_from of a list with no usable copy at all


class ListRefresher:
    """Holds the last good copy of each list (in cache_dir) and the index built from them."""

    def __init__(
        self,
        specs: Sequence[ListSpec],
        cache_dir: Path,
        *,
        min_ratio: float = 0.5,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        compiled: bool | None = None,
    ) -> None:
        """compiled: write the compiled index after each build (True/False); None writes it
        only when this process hashes with the installation's seed, so `explain` or a test
        never replaces the server's copy with one no later start can use."""
        self.specs = tuple(specs)
        self.compiled = compiled
        self.cache_dir = cache_dir
        self.min_ratio = min_ratio
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._index = CategoryIndex.empty()
        self._status: dict[ListSpec, ListStatus] = {}
        self._stats: dict[ListSpec, ListStats] = {}
        self._pending: list[snapshot.Built] | None = None
        self._missing_since: dict[ListSpec, float] = {}  # first failed attempt, for backoff
        self._failures: dict[ListSpec, int] = {}  # failed attempts to take a copy, ever

    @property
    def index(self) -> CategoryIndex:
        """The index currently built from the last good copies."""
        return self._index

    def status(self) -> list[ListStatus]:
        """How each list is being served, in spec order."""
        return [self._status[spec] for spec in self.specs if spec in self._status]

    def missing(self) -> list[ListSpec]:
        """The lists being served without any copy (first start, fetch failed, none cached)."""
        return [spec for spec in self.specs if self._is_missing(spec)]

    def failures(self) -> dict[ListSpec, int]:
        """Failed attempts to take a new copy of each list since this refresher started."""
        return {spec: self._failures.get(spec, 0) for spec in self.specs}

    def _is_missing(self, spec: ListSpec) -> bool:
        status = self._status.get(spec)
        return status is not None and status.serving_from == MISSING

    def stats(self) -> list[ListStats]:
        """The parse statistics of each list being served, in spec order."""
        return [self._stats[spec] for spec in self.specs if spec in self._stats]

    def load(
        self, *, compiled_only: bool = False, save_later: bool = False, missing_ok: bool = False
    ) -> tuple[CategoryIndex, list[ListStats]]:
        """Startup: read each list (a path, or a URL's cached copy, else fetch it) and build the
        index. Raises ListError naming every list that has no usable copy at all, unless
        `missing_ok`: then those are left out, marked missing and retried by due().
        `compiled_only`: serve the compiled index or raise StaleIndex, never parse.
        `save_later`: keep the compiled index for save_pending() instead of writing it now (the
        server answers first: writing and syncing ~25 MB took about 0.1 s)."""
        with self._lock:
            warm = self._load_compiled()
            if warm is not None:
                return warm
            if compiled_only:
                raise StaleIndex("the compiled index is not that of the current lists")
            parsed: dict[ListSpec, ParsedList] = {}
            problems: list[str] = []
            for spec in self.specs:
                try:
                    parsed[spec] = self._initial(spec)
                except ListError as exc:
                    if not missing_ok:
                        problems.append(str(exc))
                        continue
                    self._failures[spec] = self._failures.get(spec, 0) + 1
                    self._set_missing(spec, str(exc))
                    log.error(
                        "%s; serving without it, retrying in %.0f s", exc, self._retry_in(spec)
                    )
            if problems:
                raise ListError("\n".join(problems))
            self._index = self._index_from(parsed)
            self._pending = self._built(parsed)
            if not save_later:
                self._write_pending()
            return self._index, self.stats()

    def save_pending(self) -> None:
        """Write the compiled index of the last load(save_later=True), if not written yet."""
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending:
            snapshot.save(self.cache_dir, self._index, pending)

    def _load_compiled(self) -> tuple[CategoryIndex, list[ListStats]] | None:
        """The compiled index of the last build, if every list's cached copy is still the one
        to serve (what _initial would parse) and is the one it was built from."""
        copies: list[Path] = []
        notes: list[CacheNote] = []
        for spec in self.specs:
            cached = slot(self.cache_dir, spec.source)
            note = cached.read_note()
            if note is None or not _copy_is_current(spec, note):
                return None
            copies.append(cached.data)
            notes.append(note)
        found = snapshot.load(self.cache_dir, self.specs, copies)
        if found is None:
            return None
        index, stats = found
        for spec, note, one in zip(self.specs, notes, stats, strict=True):
            self._stats[spec] = one
            if is_url(spec.source):
                self._set(spec, one, "cache", note.fetched_at)
                self._status[spec] = replace(self._status[spec], checked_at=note.fetched_at)
            else:
                self._set(spec, one, "source", self._clock())
        self._index = index
        log.info("lists loaded from the compiled index: %s names", len(index))
        return index, self.stats()

    def _built(self, parsed: dict[ListSpec, ParsedList]) -> list[snapshot.Built] | None:
        """What the compiled index records of each list, or None if it is not to be written
        (not wanted, or a list is missing: the index is not that of the config's lists)."""
        wanted = self.compiled if self.compiled is not None else pinned(self.cache_dir)
        if not wanted or len(parsed) != len(self.specs):
            return None
        return [
            snapshot.Built(spec, parsed[spec].digest, parsed[spec].stats) for spec in self.specs
        ]

    def due(self) -> list[ListSpec]:
        """The lists whose refresh_h has passed since they were last checked, and the missing
        ones whose retry time has come."""
        now = self._clock()
        return [spec for spec in self.specs if self._due_at(spec) <= now]

    def next_due(self) -> float:
        """Epoch seconds when the next list is due (a missing list's retry is soon)."""
        return min((self._due_at(spec) for spec in self.specs), default=float("inf"))

    def _due_at(self, spec: ListSpec) -> float:
        status = self._status.get(spec)
        if status is None:
            return 0.0
        if status.serving_from == MISSING:
            return status.checked_at + self._retry_in(spec)
        return status.checked_at + spec.refresh_h * 3600

    def _retry_in(self, spec: ListSpec) -> float:
        """Backoff for a missing list: RETRY_FIRST_S more than it has been missing, so the
        attempts come 2, 4, 8 ... s apart, up to RETRY_MAX_S."""
        status = self._status.get(spec)
        since = self._missing_since.get(spec)
        if status is None or since is None:
            return RETRY_FIRST_S
        return min(RETRY_MAX_S, RETRY_FIRST_S + max(0.0, status.checked_at - since))

    def _set_missing(self, spec: ListSpec, problem: str) -> None:
        now = self._clock()
        self._missing_since.setdefault(spec, now)
        self._status[spec] = ListStatus(spec.source, spec.category, 0, MISSING, 0.0, now, problem)

    def refresh(
        self, specs: Sequence[ListSpec] | None = None, *, rebuild: bool = False
    ) -> CategoryIndex:
        """Refresh the given lists (default: the due ones) and return the index to serve: a new
        one if any list changed and everything rebuilt, else the current one. Never raises for
        a bad list; see status(). `rebuild`: build from the cached copies even if no list
        changed (a refresh child that died may have taken new copies: agent/dns/prebuild.py)."""
        with self._lock:
            fresh: dict[ListSpec, ParsedList] = {}
            for spec in self.due() if specs is None else specs:
                parsed = self._refresh_one(spec)
                if parsed is not None:
                    fresh[spec] = parsed
            if fresh or rebuild:
                self._rebuild(fresh)
            return self._index

    def restore(self, status: Sequence[ListStatus], stats: Sequence[ListStats]) -> None:
        """Take over each list's status and parse statistics (matched by source and category),
        as another refresher left them: a refresh child starts from the server's, and the
        server adopts the child's."""
        specs = {(spec.source, spec.category): spec for spec in self.specs}
        for one in status:
            self._status[specs[one.source, one.category]] = one
        for counted in stats:
            self._stats[specs[counted.source, counted.category]] = counted

    def adopt(
        self, status: Sequence[ListStatus], stats: Sequence[ListStats], rebuilt: bool
    ) -> CategoryIndex:
        """Take what a refresh in a child process learned (agent/dns/prebuild.py) and return
        the index to serve: if the child rebuilt, the compiled index it wrote, only loaded here
        (parsed here only if that file is not the index of the cached copies)."""
        with self._lock:
            before = dict(self._status)
            self.restore(status, stats)
            for spec, now in self._status.items():
                if now == before.get(spec):
                    continue
                if now.problem:
                    self._failures[spec] = self._failures.get(spec, 0) + 1
                if now.serving_from == MISSING:
                    retry = self._retry_in(spec)
                    log.warning("%s; still missing, retrying in %.0f s", now.problem, retry)
                elif now.problem:
                    log.warning("%s; still serving the last good copy", now.problem)
                elif self._missing_since.pop(spec, None) is not None:
                    log.warning("list %s: loaded at last", spec.source)
            if not rebuilt:
                return self._index
            copies = [slot(self.cache_dir, spec.source).data for spec in self.specs]
            found = snapshot.load(self.cache_dir, self.specs, copies)
            if found is None:
                log.warning("the refreshed lists have no usable compiled index: parsing here")
                self._rebuild({})
                return self._index
            self._index = found[0]
            log.info("refreshed lists loaded from the compiled index: %s names", len(found[0]))
            return self._index

    def _rebuild(self, fresh: dict[ListSpec, ParsedList]) -> None:
        try:
            parsed = {
                spec: fresh[spec] if spec in fresh else self._parse_cached(spec)
                for spec in self.specs
                if spec in fresh or not self._is_missing(spec)
            }
            self._index = self._index_from(parsed)
            self._pending = self._built(parsed)
            self._write_pending()
        except ListError as exc:
            log.error("list reload failed, the old index keeps serving: %s", exc)
            for spec in fresh:
                self._set(spec, fresh[spec].stats, problem=f"reload failed: {exc}")
            return
        for spec, one in parsed.items():
            self._stats[spec] = one.stats
        log.info("lists reloaded: %s names in %s categories", len(self._index), len(parsed))

    def _index_from(self, parsed: dict[ListSpec, ParsedList]) -> CategoryIndex:
        """The index of the parsed lists, whose hashes it uses up (build_index's consume:
        the table is built in a child, so this process never holds both)."""
        try:
            return index_of(self.specs, list(parsed.values()), consume=True)
        except ChildBuildFailed as exc:
            log.warning("%s; parsing the lists again and building the index here", exc)
            again = [self._parse_cached(spec) for spec in parsed]
            return index_of(self.specs, again)

    def _parse_cached(self, spec: ListSpec) -> ParsedList:
        return parse_file(slot(self.cache_dir, spec.source).data, spec.source, spec.category)

    def _set(
        self,
        spec: ListSpec,
        stats: ListStats,
        serving_from: str | None = None,
        loaded_at: float | None = None,
        problem: str | None = None,
    ) -> None:
        old = self._status.get(spec)
        self._status[spec] = ListStatus(
            source=spec.source,
            category=spec.category,
            entries=stats.entries + stats.exceptions,
            serving_from=serving_from or (old.serving_from if old else "source"),
            loaded_at=loaded_at if loaded_at is not None else (old.loaded_at if old else 0.0),
            checked_at=self._clock(),
            problem=problem,
        )

    def _initial(self, spec: ListSpec) -> ParsedList:
        cached = slot(self.cache_dir, spec.source)
        note = cached.read_note()
        if is_url(spec.source) and note is not None:
            try:
                parsed = parse_file(cached.data, spec.source, spec.category)
            except ListError as exc:
                log.warning("cached copy unusable, fetching again: %s", exc)
            else:
                self._stats[spec] = parsed.stats
                self._set(spec, parsed.stats, "cache", note.fetched_at)
                # A restart should not refetch everything at once: due when the copy is due.
                self._status[spec] = replace(self._status[spec], checked_at=note.fetched_at)
                return parsed
        try:
            taken = self._take(spec, cached, None if is_url(spec.source) else note)
            # None: the local file is the one already cached.
            parsed = taken if taken is not None else self._parse_cached(spec)
        except ListError as exc:
            if note is None or is_url(spec.source):
                raise
            log.warning("%s; serving the last good copy from the cache", exc)
            parsed = parse_file(cached.data, spec.source, spec.category)
            self._stats[spec] = parsed.stats
            self._set(spec, parsed.stats, "cache", note.fetched_at, problem=str(exc))
            return parsed
        self._stats[spec] = parsed.stats
        self._set(spec, parsed.stats, "source", self._clock())
        return parsed

    def _refresh_one(self, spec: ListSpec) -> ParsedList | None:
        cached = slot(self.cache_dir, spec.source)
        note = cached.read_note()
        missing = self._is_missing(spec)
        try:
            parsed = self._take(spec, cached, None if missing else note, guard=not missing)
        except ListError as exc:
            self._failures[spec] = self._failures.get(spec, 0) + 1
            if missing:
                self._set_missing(spec, str(exc))
                log.warning("%s; still missing, retrying in %.0f s", exc, self._retry_in(spec))
            else:
                log.warning("%s; still serving the last good copy", exc)
                if spec in self._stats:
                    self._set(spec, self._stats[spec], problem=str(exc))
            return None
        if parsed is None:  # unchanged
            self._set(spec, self._stats[spec])
            return None
        if self._missing_since.pop(spec, None) is not None:
            log.warning("list %s: loaded at last", spec.source)
        self._set(spec, parsed.stats, "source", self._clock())
        return parsed

    def _take(
        self, spec: ListSpec, cached: CacheSlot, note: CacheNote | None, guard: bool = False
    ) -> ParsedList | None:
        """Bring the source's current copy into the cache if it is good and return its parse;
        None if the cached copy is still current. `guard` refuses a copy that shrank."""
        try:
            note_out = self._download(spec, cached, note)
            if note_out is None:
                return None
            parsed = parse_file(cached.part, spec.source, spec.category)
            entries = parsed.stats.entries + parsed.stats.exceptions
            if guard and note is not None and entries < self.min_ratio * note.entries:
                raise ListError(
                    f"list {spec.source}: shrank from {note.entries} to {entries} entries "
                    f"(below {self.min_ratio:.0%} of the last good copy)"
                )
        except ListError:
            cached.discard_part()
            raise
        cached.accept(cached.part, replace(note_out, entries=entries))
        return parsed

    def _download(
        self, spec: ListSpec, cached: CacheSlot, note: CacheNote | None
    ) -> CacheNote | None:
        """Put a fresh copy in cached.part; None if the cached copy is still current."""
        now = self._clock()
        if is_url(spec.source):
            # urllib and ssl (about 5 MB resident) only once a list is really downloaded.
            from agent.filter.lists.fetch import fetch

            got = fetch(
                spec.source,
                cached.part,
                note.etag if note else None,
                note.last_modified if note else None,
                self.timeout,
            )
            if not got.changed:
                return None
            return CacheNote(spec.source, 0, now, got.etag, got.last_modified, got.size)
        path = Path(spec.source)
        try:
            info = path.stat()
        except OSError as exc:
            raise ListError(f"list {spec.source}: cannot read: {exc.strerror}") from exc
        if note is not None and (info.st_size, info.st_mtime_ns) == (note.size, note.mtime_ns):
            return None
        copy_file(path, cached.part)
        return CacheNote(spec.source, 0, now, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _copy_is_current(spec: ListSpec, note: CacheNote) -> bool:
    """True if _initial would serve the cached copy as is: always for a URL (refreshed later,
    when due), and for a path whose size and mtime are those the copy was taken at."""
    if is_url(spec.source):
        return True
    try:
        info = Path(spec.source).stat()
    except OSError:
        return False
    return (info.st_size, info.st_mtime_ns) == (note.size, note.mtime_ns)
