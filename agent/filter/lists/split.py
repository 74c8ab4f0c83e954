"""Half the work of a cold start in a forked child: parsing a big list and filling the index.

A cold start (no compiled index yet) with 1,000,000 names is CPU work in Python loops that
hold the GIL: a thread cannot share it, a process can. `Forked(work)` runs `work` in a child
made by fork(), which shares the parent's memory copy-on-write (the parsed hashes, the
config), so there is nothing to send it; the child sends back only the bytes `work` returns,
and the parent meanwhile does the other half.

Fork is only used while the process has a single thread (the server's first load, the
prebuild child, `check`): forking a threaded process can leave the child blocked on a lock
another thread held. Otherwise, or if the child fails for any reason, `result()` is None and
the caller does that half itself: the outcome is the same, only slower.
"""

from __future__ import annotations

import os
import struct
import threading
from array import array
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import BinaryIO

_LEN = struct.Struct("<Q")


def forkable() -> bool:
    """True if this process may fork a worker safely now (a POSIX fork and one thread)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Forked:
    """`work` running in a forked child; `result()` waits for the parts it returned."""

    def __init__(self, work: Callable[[], Sequence[bytes | memoryview]]) -> None:
        self._pid = 0
        self._fd = -1
        if not forkable():
            return
        read_fd, write_fd = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            return
        if pid == 0:  # the child: do the work, send it, and leave without any cleanup
            status = 1
            try:
                os.close(read_fd)
                parts = work()
                with os.fdopen(write_fd, "wb") as out:
                    out.write(_LEN.pack(len(parts)))
                    for part in parts:
                        out.write(_LEN.pack(len(part)))
                        out.write(part)
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        self._pid = pid
        self._fd = read_fd

    @property
    def started(self) -> bool:
        """True if a child is doing the work (else the caller must do it)."""
        return self._pid != 0

    def result(self, sink: Callable[[int, int], memoryview]) -> bool:
        """Wait for the child, reading its part i of n bytes straight into sink(i, n) (no copy
        in between). False if there was no child or it failed: what sink got is then
        incomplete and the caller must do the work itself."""
        if not self._pid:
            return False
        ok = True
        try:
            with os.fdopen(self._fd, "rb") as source:
                count = _read_len(source)
                for i in range(count):
                    size = _read_len(source)
                    target = sink(i, size)
                    if source.readinto(target) != size:
                        raise EOFError
        except (EOFError, OSError):
            ok = False
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        return ok and status == 0


def tail(buffer: array[int], size: int) -> memoryview:
    """Grow buffer by size bytes and return them, writable (a sink for Forked.result)."""
    buffer.extend(repeat(0, size // buffer.itemsize))  # no multi-MB temporary (see index.py)
    return memoryview(buffer).cast("B")[len(buffer) * buffer.itemsize - size :]


def _read_len(source: BinaryIO) -> int:
    data = source.read(_LEN.size)
    if len(data) != _LEN.size:
        raise EOFError
    return int(_LEN.unpack(data)[0])
