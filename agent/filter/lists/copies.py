"""The last good copy of each list on disk, with a small JSON note beside it.

`<cache_dir>/<sha256(source)[:16]>.list` holds the bytes that were last accepted;
`.json` beside it says where they came from, how many entries they held and the HTTP
validators, so a restart without network serves the same list and a later refresh can be
compared against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.filter.lists.model import ListError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheNote:
    """What we know about a cached copy."""

    source: str
    entries: int
    fetched_at: float
    etag: str | None = None
    last_modified: str | None = None
    size: int = 0
    mtime_ns: int = 0  # of the local source file the copy was made from


@dataclass(frozen=True, slots=True)
class CacheSlot:
    """The files of one source in the cache directory."""

    data: Path
    note: Path
    part: Path  # where a download lands before it is accepted

    def read_note(self) -> CacheNote | None:
        """The note, or None if there is no usable copy (missing or unreadable note/data)."""
        if not self.data.exists():
            return None
        try:
            raw = json.loads(self.note.read_text(encoding="utf-8"))
            return CacheNote(**raw)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring cache note %s: %s", self.note, exc)
            return None

    def accept(self, new_data: Path, note: CacheNote) -> None:
        """Make new_data the cached copy (atomic rename), then write its note; both 0600, as
        they decide what is filtered."""
        try:
            os.chmod(new_data, 0o600)
            os.replace(new_data, self.data)
            tmp = self.note.with_suffix(".json.tmp")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(note)))
            os.replace(tmp, self.note)
        except OSError as exc:
            raise ListError(f"list {note.source}: cannot write the cache: {exc}") from exc

    def discard_part(self) -> None:
        """Remove a refused download."""
        self.part.unlink(missing_ok=True)


def slot(cache_dir: Path, source: str) -> CacheSlot:
    """The cache files for a source (the directory is created if needed)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ListError(f"list cache {cache_dir}: cannot create: {exc.strerror}") from exc
    key = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return CacheSlot(
        cache_dir / f"{key}.list", cache_dir / f"{key}.json", cache_dir / f"{key}.part"
    )


def copy_file(source: Path, dest: Path) -> None:
    """Copy a local list into the cache; raises ListError naming the source."""
    try:
        shutil.copyfile(source, dest)
    except OSError as exc:
        raise ListError(f"list {source}: cannot copy to {dest}: {exc.strerror or exc}") from exc
