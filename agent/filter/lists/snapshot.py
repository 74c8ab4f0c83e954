"""The compiled index on disk, so a restart serves in milliseconds instead of re-parsing lists.

`<cache_dir>/index.bin` (0600, written to a temporary file and renamed) holds:

    MAGIC (8 bytes) | header length (4 bytes, little-endian) | header (JSON) | arrays

The arrays are the table's keys and masks as `array.tofile` writes them (machine order). The
header says what they were built from: the file format, a digest of the parsing and index
code, the hash fingerprint (hashseed.py), the byte order, every list in order (source,
category, statutory, SHA-256 of the bytes parsed, parse statistics), the table's sizes and
the SHA-256 of the arrays. The source lists stay the truth: a file that differs in any of
these, is truncated, corrupt, not ours or writable by others is ignored with a log line and
the index is rebuilt from the lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.filter.hashseed import fingerprint
from agent.filter.lists import index as index_module
from agent.filter.lists import model, names, parser, rules
from agent.filter.lists.index import CategoryIndex, categories_of
from agent.filter.lists.model import ListSpec, ListStats

log = logging.getLogger(__name__)
_STEP_BYTES = 1 << 20  # how much of a table is read per step

FILE = "index.bin"
MAGIC = b"HRWIDX\x00\x01"
FORMAT = 1
_MAX_HEADER = 1 << 24
_MASK_CODES = frozenset("BHILQ")


@dataclass(frozen=True, slots=True)
class Built:
    """One list as the index was built from it: its spec, the SHA-256 of the bytes parsed and
    the parse statistics."""

    spec: ListSpec
    digest: bytes
    stats: ListStats


def code_digest() -> str:
    """SHA-256 of the modules that decide what a list means and how the table is laid out: a
    changed parser or index makes every compiled copy stale."""
    digest = hashlib.sha256(f"{FORMAT}".encode())
    for module in (names, rules, parser, model, index_module):
        path = getattr(module, "__file__", None)
        digest.update(Path(path).read_bytes() if path else module.__name__.encode())
    return digest.hexdigest()


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes (the same digest parser.parse_file computes)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _identity(specs: Sequence[ListSpec]) -> list[list[Any]]:
    return [[s.source, s.category, s.statutory] for s in specs]


def save(cache_dir: Path, index: CategoryIndex, built: Sequence[Built]) -> None:
    """Write the compiled index atomically (0600); a failure is logged, never raised."""
    parts = index.parts()
    payload = hashlib.sha256(parts.keys)
    for mask in parts.masks:
        payload.update(mask)
    header = {
        "format": FORMAT,
        "code": code_digest(),
        "hash": fingerprint(),
        "byteorder": sys.byteorder,
        "lists": _identity([b.spec for b in built]),
        "digests": [b.digest.hex() for b in built],
        "stats": [asdict(b.stats) for b in built],
        "categories": list(index.categories),
        "cap": parts.cap,
        "size": parts.size,
        "depths": parts.depths,
        "length": len(parts.keys),
        "masks": [mask.typecode for mask in parts.masks],
        "payload": payload.hexdigest(),
    }
    raw = json.dumps(header).encode()
    path = cache_dir / FILE
    tmp = cache_dir / f"{FILE}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + len(raw).to_bytes(4, "little") + raw)
            parts.keys.tofile(handle)
            for mask in parts.masks:
                mask.tofile(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the compiled index %s: %s", path, exc)
        tmp.unlink(missing_ok=True)
        return
    log.debug("compiled index written: %s names, %s", parts.size, path)


class _Unusable(Exception):
    """The compiled index cannot be used; the message says why (logged at `level`)."""

    def __init__(self, why: str, level: int = logging.WARNING) -> None:
        super().__init__(why)
        self.level = level


def load(
    cache_dir: Path, specs: Sequence[ListSpec], copies: Sequence[Path]
) -> tuple[CategoryIndex, list[ListStats]] | None:
    """The compiled index if it was built from exactly these lists (copies[i] holds the bytes of
    specs[i]) by this code under this hash seed; None (logged) otherwise."""
    path = cache_dir / FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        log.info("no compiled index yet: building from the lists")
        return None
    except OSError as exc:
        log.warning("ignoring the compiled index %s: %s", path, exc)
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            return _read(handle, specs, copies)
    except _Unusable as exc:
        log.log(
            exc.level, "ignoring the compiled index %s: %s; rebuilding from the lists", path, exc
        )
    except (OSError, ValueError, KeyError, TypeError, EOFError, OverflowError) as exc:
        log.warning("ignoring the compiled index %s: unreadable (%r); rebuilding", path, exc)
    return None


def _read(
    handle: io.BufferedReader, specs: Sequence[ListSpec], copies: Sequence[Path]
) -> tuple[CategoryIndex, list[ListStats]]:
    info = os.fstat(handle.fileno())
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise _Unusable("not owned by this user, or writable by others")
    head = handle.read(12)
    if len(head) < 12 or head[:8] != MAGIC:
        raise _Unusable("not a compiled index of this format")
    length = int.from_bytes(head[8:], "little")
    if length > _MAX_HEADER:
        raise _Unusable("header too large")
    raw = handle.read(length)
    if len(raw) < length:
        raise _Unusable("truncated")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise _Unusable("malformed header")
    if header["format"] != FORMAT or header["code"] != code_digest():
        raise _Unusable("built by another version of the list code")
    if header["byteorder"] != sys.byteorder:
        raise _Unusable("built on a machine of another byte order")
    if header["hash"] != fingerprint():
        # expected in `check`, `explain` and tests, which do not pin the seed: not a warning
        raise _Unusable("built under another hash seed", logging.INFO)
    if header["lists"] != _identity(specs):
        raise _Unusable("built from another set of lists")
    for spec, copy, recorded in zip(specs, copies, header["digests"], strict=True):
        if file_digest(copy).hex() != recorded:
            raise _Unusable(f"stale: list {spec.source} has changed")
    categories = categories_of(specs)
    if tuple(header["categories"]) != categories:
        raise _Unusable("categories differ")
    count, cap = header["length"], header["cap"]
    codes = header["masks"]
    if not (
        isinstance(count, int)
        and isinstance(cap, int)
        and 8 <= cap < count
        and len(codes) in (1, 4)
        and all(code in _MASK_CODES for code in codes)
    ):
        raise _Unusable("malformed table sizes")
    keys = _array(handle, "q", count)
    masks = [_array(handle, code, count) for code in codes]
    if handle.read(1):
        raise _Unusable("trailing bytes")
    payload = hashlib.sha256(keys)
    for mask in masks:
        payload.update(mask)
    if payload.hexdigest() != header["payload"]:
        raise _Unusable("corrupt: the tables do not match their digest")
    if keys[-1] != 0:
        raise _Unusable("corrupt: no probe sentinel")
    stats = [ListStats(**fields) for fields in header["stats"]]
    statutory = frozenset(spec.category for spec in specs if spec.statutory)
    statutory_mask = sum(1 << categories.index(c) for c in statutory)
    depths, size = header["depths"], header["size"]
    index = CategoryIndex(categories, keys, masks, cap, size, depths, statutory_mask)
    return index, stats


def _array(handle: io.BufferedReader, code: str, count: int) -> array[int]:
    """count items read in 1 MB steps: no temporary copy of the whole table (loading does not
    peak at twice its size), and the GIL is held for one step's copy at a time, not for a
    16 MB fill (a reload loads in a worker thread while the event loop answers)."""
    table = array(code)
    step = max(1, _STEP_BYTES // table.itemsize)
    while len(table) < count:
        try:
            table.fromfile(handle, min(step, count - len(table)))
        except EOFError:
            raise _Unusable("truncated") from None
    return table
