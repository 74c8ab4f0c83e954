"""The per-installation hash seed that lets a compiled index outlive the process that built it.

The index stores CPython's hash() of each listed name (see index.py). That hash is SipHash
keyed per process, so a table written by one process is useless to the next unless both run
under the same PYTHONHASHSEED. `hedgerow-dns serve` therefore re-executes itself once at start
with PYTHONHASHSEED set to a secret kept in `<list_cache_dir>/hashseed` (0600), or runs under
it already when systemd passes it (`EnvironmentFile=`).

Why this and not a keyed hash of our own: measured on the dev box, hashlib.blake2b(key=...,
digest_size=8) costs 0.65-1.6 us per name against 0.13-0.28 us for hash(); a lookup hashes 2-4
suffixes, so it would add 1-5 us to a ~4 us per-query budget, and 0.6-1.6 s to a cold build of
1,000,000 names. hash() under a pinned seed costs nothing on the hot path.

What it costs, honestly: the seed is process-wide. Every str/bytes hash in the process (dicts
and sets too, not only the index) uses it, and the seed is 32 bits, not the 128 random bits
Python picks by default. It stays secret (0600, never logged or sent), so hash flooding still
needs the seed first; the compiled index holds hashes of public names and is 0600 as well,
since it would let an offline search recover the seed.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PYTHONHASHSEED"
_REEXECUTED = "HEDGEROW_DNS_REEXECUTED"  # loop guard: re-execute at most once
FILE = "hashseed"
_MAX = 2**32 - 1  # the range CPython accepts; 0 would turn randomisation off
# Names whose hashes identify the hash function in use (same seed, same build: same values).
_PROBES = ("hedgerow.probe", "example.com", "a", "")


def fingerprint() -> int:
    """A value that differs, with overwhelming probability, between processes whose str hashes
    differ: a compiled index is only valid in a process with the same fingerprint."""
    value = 0
    for probe in _PROBES:
        value = value * 1_000_003 ^ hash(probe)
    return value & (2**63 - 1)


def installation_seed(cache_dir: Path) -> int | None:
    """The installation's seed, created (0600) on first use; None (logged) if it cannot be read
    or written, in which case lists are rebuilt at every start."""
    path = cache_dir / FILE
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        seed = _read(path)
        if seed is not None:
            return seed
        seed = secrets.randbelow(_MAX) + 1
        tmp = path.with_name(f"{FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{seed}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return seed
    except OSError as exc:
        log.warning("no hash seed in %s (%s): lists are rebuilt at every start", cache_dir, exc)
        return None


def _read(path: Path) -> int | None:
    """The seed in path, or None if there is none or it cannot be trusted (logged)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="ascii", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        text = handle.read(32).strip()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        log.warning("hash seed %s is not private to this user; making a new one", path)
        return None
    if not text.isdigit() or not 0 < int(text) <= _MAX:
        log.warning("hash seed %s is malformed; making a new one", path)
        return None
    return int(text)


def pinned(cache_dir: Path) -> bool:
    """True if this process hashes with the installation's seed, so a compiled index it writes
    is useful to the next start."""
    current = os.environ.get(ENV)
    if current is None or not current.isdigit():
        return False
    try:
        return _read(cache_dir / FILE) == int(current)
    except OSError:
        return False


def pin(cache_dir: Path) -> None:
    """Return if this process hashes with the installation's seed (or there is none to be had);
    otherwise re-execute it under that seed, once, so the compiled index can be served."""
    seed = installation_seed(cache_dir)
    if seed is None or os.environ.get(ENV) == str(seed):
        os.environ.pop(_REEXECUTED, None)
        return
    if os.environ.pop(_REEXECUTED, None):
        log.warning("the hash seed did not take after re-executing; lists are rebuilt each start")
        return
    log.debug("re-executing under the installation's hash seed")
    env = {**os.environ, ENV: str(seed), _REEXECUTED: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
