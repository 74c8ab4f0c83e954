"""A per-device sequence number that never repeats, even across crashes and restarts.

Numbers are reserved in blocks: the file records the end of the current block (fsynced) before
any number in it is used, so a crash skips at most one block and never reuses a number.
"""

from __future__ import annotations

import threading
from pathlib import Path

from common.wire.errors import WireError
from common.wire.keyfile import write_atomic

BLOCK = 1024


class Sequence:
    """Hands out 1, 2, 3, ... persisted in `path`."""

    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self._path = Path(path)
        self._block = block
        self._lock = threading.Lock()
        reserved = self._read()
        self._next = reserved + 1  # numbers up to `reserved` may have been used before a crash
        self._reserved = reserved

    def _read(self) -> int:
        if not self._path.exists():
            return 0
        text = self._path.read_text("ascii").strip()
        if not text.isdigit():
            raise WireError(f"{self._path}: sequence file is corrupt ({text[:20]!r})")
        return int(text)

    def next(self) -> int:
        """The next number; reserves a new block on disk first when needed."""
        with self._lock:
            if self._next > self._reserved:
                self._reserved = self._next + self._block - 1
                write_atomic(self._path, f"{self._reserved}\n".encode("ascii"), 0o600)
            value = self._next
            self._next += 1
            return value
