"""Keep the agent's resident memory near what it uses: it runs on every laptop all day, within
40 MB (issue 12, docs/benchmarks.md).

glibc gives each thread that allocates an arena of its own and keeps freed memory mapped for
reuse. The agent's few threads (the sniffer's reader, the executor sampling activity, the
publisher) allocate little, so one arena serves them all (`limit_arenas`, before any thread
starts), and what the start-up left free (the policy's compiled index replaced, TLS handshakes,
the first activity sample) goes back to the kernel (`trim`, from the status loop). Elsewhere
(musl, macOS, Windows) both do nothing.

"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # malloc.h


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
    if _LIBC is None:
        return False
    taken = bool(_LIBC.mallopt(_M_ARENA_MAX, arenas))
    if not taken:
        log.debug("mallopt(M_ARENA_MAX) refused")
    return taken


def trim() -> bool:
    """Give freed heap pages back to the kernel; True if any went."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))
