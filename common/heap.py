"""Keep an edge daemon's resident memory near what it uses (glibc's allocator settings): the
laptop agent runs on every laptop all day within 40 MB, hedgerow-dns on a Pi within 64 MB with
1,000,000 listed names (issues 11 and 12, docs/benchmarks.md).

- `fix_mmap_threshold`: glibc serves allocations over 128 KiB with their own mapping, returned
  to the kernel when freed, but freeing one raises that threshold to its size (up to 32 MiB).
  A cold start frees the parsed hashes of a big list (8 bytes a name: 8 MiB for 1,000,000), so
  from then on every dict table and buffer under 8 MiB came from the heap, where a freed one
  stays resident: a cold mix then peaked 1.5 MiB higher than after a warm start. Fixed at 128
  KiB, the threshold no longer moves (measured: the same QPS).
- `limit_arenas`: glibc gives each thread that allocates an arena of its own and keeps freed
  memory mapped for reuse. The agent's few threads (the sniffer's reader, the executor sampling
  activity, the publisher) allocate little, so one arena serves them all (before any thread
  starts).
- `trim`: what the start-up left free (the policy's compiled index replaced, TLS handshakes,
  the first activity sample) goes back to the kernel (the agent's status loop calls it).

Elsewhere (musl, macOS, Windows) all three do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_LIBC = _glibc()


def limit_arenas(arenas: int = 1) -> bool:
    """Let at most `arenas` malloc arenas exist; True if the allocator took it."""
    return _mallopt(_M_ARENA_MAX, arenas, "M_ARENA_MAX")


def fix_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Serve allocations over `size` bytes with their own mappings, and stop glibc raising that
    threshold when one is freed; True if the allocator took it."""
    return _mallopt(_M_MMAP_THRESHOLD, size, "M_MMAP_THRESHOLD")


def _mallopt(param: int, value: int, name: str) -> bool:
    if _LIBC is None:
        return False
    taken = bool(_LIBC.mallopt(param, value))
    if not taken:
        log.debug("mallopt(%s) refused", name)
    return taken


def trim() -> bool:
    """Give freed heap pages back to the kernel; True if any went."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
