"""Streaming parse of one list file into compact arrays of name hashes, one array per rule kind.

Files are read in chunks. Each chunk first tries a bulk fast path: if every rule line of the
chunk is a clean name in the file's common shape (`name`, `0.0.0.0 name`, `||name^`), the
names are hashed by C-level `map(hash, ...)` with no per-line Python work. Any chunk the fast
path cannot prove clean falls back to `rules.parse_line`, line by line, so odd lines are
counted exactly. No name string outlives its chunk: only 64-bit hashes are kept. The SHA-256
of the bytes read is kept too: it is how a compiled index on disk (snapshot.py) is matched to
the lists it was built from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import contains, itemgetter
from pathlib import Path
from typing import Any

from agent.filter.lists.model import BLOCK, EXCEPT, EXCEPT_WILDCARD, ListError, ListStats
from agent.filter.lists.names import MAX_NAME
from agent.filter.lists.rules import ADBLOCK, HOSTS, HOSTS_BOILERPLATE, detect_format, parse_line
from agent.filter.lists.split import Forked, forkable, tail

log = logging.getLogger(__name__)

CHUNK = 1 << 18
SPLIT_MIN_BYTES = 8 << 20  # files from which parsing is split over two processes
_SAMPLE = 1 << 16
_DEEP = ((1 << 128) - 1) & ~0b11  # depths 2..127: what a bulk chunk may hold
# Lines the fast path may drop before checking a chunk: blanks and whole-line comments.
_DOMAIN_COMMENTS = re.compile(r"^[ \t]*(?:#[^\n]*)?\n", re.M)
_ADBLOCK_COMMENTS = re.compile(r"^[ \t]*(?:![^\n]*|\[[^\n]*\])?\n", re.M)
_CHARSET = re.compile(r"[a-z0-9_.\n-]*")
_DIGIT_TLD = re.compile(r"[.\n][0-9]+\n")
_LONG_LABEL = re.compile(r"[^.\n]{64}")
_DIGITS = frozenset("0123456789")
_LAST = itemgetter(-1)


@dataclass(frozen=True, slots=True)
class ParsedList:
    """One list reduced to hashes: `kinds` maps a rule kind (model.BLOCK...) to name hashes;
    `depths` has bit d set when some entry has d labels; `digest` is the SHA-256 of the file."""

    stats: ListStats
    kinds: dict[int, array[int]]
    depths: int
    digest: bytes = b""

    def __len__(self) -> int:
        return sum(len(hashes) for hashes in self.kinds.values())


def read_lines(
    path: Path,
    source: str,
    digest: hashlib._Hash | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[str]:
    """The decoded text of a list file (or of bytes start..stop, which must begin and end on a
    line boundary) in chunks ending on a line boundary; every byte read is fed to digest, if
    given."""
    try:
        with open(path, "rb") as handle:
            carry = b""
            first = start == 0
            handle.seek(start)
            left = -1 if stop is None else stop - start
            while left:
                block = handle.read(CHUNK if left < 0 else min(CHUNK, left))
                if not block:
                    break
                if left > 0:
                    left -= len(block)
                if digest is not None:
                    digest.update(block)
                if b"\0" in block:
                    raise ListError(f"list {source}: looks binary (NUL bytes), not a text list")
                if first and block.startswith(b"\xef\xbb\xbf"):
                    block = block[3:]
                first = False
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    if len(carry) > CHUNK * 4:
                        raise ListError(f"list {source}: a line is over 1 MB long; not a list")
                    continue
                carry = block[cut:]
                yield _decode(block[:cut])
            if carry:
                yield _decode(carry + b"\n")
    except OSError as exc:
        raise ListError(f"list {source}: cannot read {path}: {exc.strerror or exc}") from exc


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


class _Builder:
    """Accumulates hashes and counts for one list."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.kinds: dict[int, array[int]] = {}
        self.depths = 0
        self.entries = self.exceptions = self.skipped = self.invalid = 0

    def bulk(self, names: list[str]) -> None:
        self.kinds.setdefault(BLOCK, array("q")).extend(map(hash, names))
        self.depths |= _DEEP
        if not all(map(contains, names, repeat("."))):
            self.depths |= 0b10  # a single-label name such as a whole TLD
        self.entries += len(names)

    def careful(self, text: str) -> None:
        for line in text.split("\n"):
            result = parse_line(self.fmt, line)
            self.skipped += result.skipped
            self.invalid += result.invalid
            for name, kind in result.entries:
                self.kinds.setdefault(kind, array("q")).append(hash(name))
                self.depths |= 1 << (name.count(".") + 1)
                if kind in (EXCEPT, EXCEPT_WILDCARD):
                    self.exceptions += 1
                else:
                    self.entries += 1

    def chunk(self, text: str) -> None:
        names = _fast_names(self.fmt, text)
        if names is None:
            self.careful(text)
        elif names:
            self.bulk(names)


def _fast_names(fmt: str, text: str) -> list[str] | None:
    """The chunk's names if every rule line is a clean name in the common shape, else None.

    Only C-level string operations: a chunk costs a few passes over its text, not a Python
    loop per line."""
    body = text.lower()
    if fmt == ADBLOCK:
        if "!" in body or "[" in body or "\n\n" in body or body.startswith("\n"):
            body = _ADBLOCK_COMMENTS.sub("", body)
        body = ("\n" + body).replace("\n||", "\n").replace("^\n", "\n")[1:]
    else:
        if "#" in body or "\n\n" in body or body.startswith("\n"):
            body = _DOMAIN_COMMENTS.sub("", body)
        if fmt == HOSTS:
            body = ("\n" + body).replace("\n0.0.0.0 ", "\n").replace("\n127.0.0.1 ", "\n")[1:]
    if not body:
        return []
    if _CHARSET.fullmatch(body) is None or body[0] in ".\n":
        return None
    if ".." in body or "\n." in body or ".\n" in body or "\n\n" in body:
        return None
    names = body.split("\n")
    names.pop()
    longest = max(map(len, names))
    if longest > MAX_NAME or (longest > 63 and _LONG_LABEL.search(body)):
        return None
    if not _DIGITS.isdisjoint(map(_LAST, names)) and _DIGIT_TLD.search("\n" + body):
        return None  # an IPv4 address or a numeric top-level label: let the careful path count it
    if fmt == HOSTS and not HOSTS_BOILERPLATE.isdisjoint(names):
        return None
    return names


def parse_file(path: Path, source: str, category: str) -> ParsedList:
    """Parse a list file; raises ListError if it is unreadable, binary, empty or unparseable.
    A big file is parsed in two halves at once, the second in a forked child (split.py)."""
    builder = _parse_split(path, source)
    if builder is not None:
        digest = _file_digest(path, source)
    else:
        digest = hashlib.sha256()
        for text in read_lines(path, source, digest):
            if builder is None:
                builder = _Builder(detect_format(text[:_SAMPLE]))
            builder.chunk(text)
    if builder is None:
        raise ListError(f"list {source}: is empty")
    stats = ListStats(
        source=source,
        category=category,
        format=builder.fmt,
        entries=builder.entries,
        exceptions=builder.exceptions,
        skipped=builder.skipped,
        invalid=builder.invalid,
    )
    rules = stats.entries + stats.exceptions
    if rules == 0:
        raise ListError(
            f"list {source}: no usable entries (format {stats.format}: "
            f"{stats.skipped} unsupported, {stats.invalid} invalid lines)"
        )
    if stats.invalid > rules:
        raise ListError(
            f"list {source}: unparseable: {stats.invalid} invalid lines against {rules} "
            f"entries (is it a {stats.format} list?)"
        )
    log.debug(
        "parsed %s: %s %s entries, %s exceptions, %s skipped, %s invalid",
        source,
        stats.format,
        stats.entries,
        stats.exceptions,
        stats.skipped,
        stats.invalid,
    )
    for hashes in builder.kinds.values():
        while 0 in hashes:  # 0 marks an empty index slot; lookups hash such a name to 1
            hashes[hashes.index(0)] = 1
    return ParsedList(stats, builder.kinds, builder.depths, digest.digest())


def _file_digest(path: Path, source: str) -> hashlib._Hash:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256")
    except OSError as exc:
        raise ListError(f"list {source}: cannot read {path}: {exc.strerror or exc}") from exc


def _parse_split(path: Path, source: str) -> _Builder | None:
    """Parse a big file as two halves split on a line boundary, the second half in a forked
    child, and merge them into what one pass would give; None if the file is small, its
    first chunk holds no line break, or no child can run (the caller parses it whole)."""
    try:
        size = path.stat().st_size
        if size < SPLIT_MIN_BYTES or not forkable():
            return None
        with open(path, "rb") as handle:
            head = handle.read(CHUNK)
            handle.seek(size // 2)
            middle = handle.read(CHUNK * 4)
    except OSError:
        return None  # the whole-file path reports it
    head = head.removeprefix(b"\xef\xbb\xbf")
    cut = middle.find(b"\n") + 1
    lines = head.rfind(b"\n") + 1
    if cut == 0 or lines == 0:
        return None
    mid = size // 2 + cut
    fmt = detect_format(_decode(head[:lines])[:_SAMPLE])  # as the whole-file pass detects it

    def second_half() -> list[bytes]:
        half = _Builder(fmt)
        try:
            for text in read_lines(path, source, start=mid):
                half.chunk(text)
        except ListError as exc:
            return [json.dumps({"error": str(exc)}).encode()]
        counts = [half.entries, half.exceptions, half.skipped, half.invalid, half.depths]
        head = {"counts": counts, "kinds": list(half.kinds)}
        return [json.dumps(head).encode(), *(a.tobytes() for a in half.kinds.values())]

    child = Forked(second_half)
    if not child.started:
        return None
    builder = _Builder(fmt)
    own_error: ListError | None = None
    try:
        for text in read_lines(path, source, stop=mid):
            builder.chunk(text)
    except ListError as exc:
        own_error = exc
    raw = bytearray()
    header: dict[str, Any] = {}

    def into(i: int, size: int) -> memoryview:
        """Part 0 is the header (JSON); part i > 0 holds the hashes of header kinds[i - 1]."""
        if i == 0:
            raw.extend(bytes(size))
            return memoryview(raw)
        if not header:
            header.update(json.loads(raw))
        if own_error is not None:
            return memoryview(bytearray(size))  # read and dropped: the error wins
        return tail(builder.kinds.setdefault(header["kinds"][i - 1], array("q")), size)

    ok = child.result(into)
    if own_error is not None:
        raise own_error
    if not ok:
        log.warning("parsing %s in a child process failed; parsing it whole here", source)
        return None
    header = header or json.loads(raw)
    if "error" in header:
        raise ListError(str(header["error"]))
    entries, exceptions, skipped, invalid, depths = header["counts"]
    builder.entries += entries
    builder.exceptions += exceptions
    builder.skipped += skipped
    builder.invalid += invalid
    builder.depths |= depths
    return builder
