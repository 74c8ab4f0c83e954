"""Reload without a stall: the lists are parsed and the index built in a child process, which
writes the compiled index (lists/snapshot.py); the serving process then only loads that file.

Why a process and not a thread: parsing 1,000,000 names and filling the table is CPU work that
holds the GIL (C-level loops such as map(hash, ...) hold it for their whole run), so in a
thread it held answers back for 80-310 ms per reload and raised the peak to old index + new
index + parse buffers. The child inherits the pinned hash seed (agent/filter/hashseed.py), so what it
writes is what the server's own load() accepts. If a list changes while the child builds, the
index it wrote is stale: the server runs it again, up to ATTEMPTS times (service.py). Only if no
child can run at all (it cannot start, or dies of a signal or a bug) does the server parse in a
worker thread of its own; a child that finds the config or a list bad refuses the reload.

The timed refresh of due lists runs here too (`--refresh`): the server hands its refresher's
state over on stdin (lists/handoff.py); the child downloads the due lists, keeps the old copy
of any bad one, rebuilds and writes the compiled index if a list changed, and answers each
list's status on stdout for the server to adopt. A bad download refuses nothing.

    python -m agent.dns.prebuild CONFIG     # exit 0: the compiled index is current
    python -m agent.dns.prebuild --refresh  # job on stdin, exit 0: its outcome on stdout
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.dns.config import load_config
from agent.filter.hashseed import pinned
from agent.filter.lists import ListRefresher
from agent.filter.lists.handoff import Handoff, handoff_of, job_of, run_job
from common.errors import HedgerowError

log = logging.getLogger(__name__)

TIMEOUT_S = 600.0
ATTEMPTS = 4  # builds per reload while the lists keep changing under the child
EXIT_REFUSED = 3  # the child's exit status when the config or a list is bad
NICE = 10  # the child's scheduling priority, relative to the server's


class Built(enum.Enum):
    """What a child build gave."""

    CURRENT = "current"  # the compiled index is that of the lists as the child read them
    UNAVAILABLE = "unavailable"  # no child could run: the caller may parse in-process


def usable(cache_dir: Path) -> bool:
    """True if a child's compiled index would be loadable here (same pinned hash seed)."""
    return pinned(cache_dir)


async def prebuild(config_path: Path, timeout_s: float = TIMEOUT_S) -> Built:
    """Run the child and wait for it without blocking the event loop. Raises HedgerowError if
    the child found the config or a list bad, or overran timeout_s (killed)."""
    started = time.monotonic()
    # Started from a worker thread with subprocess (vfork): asyncio's own subprocess support
    # under uvloop forks the whole server, which held the event loop for 10-17 ms here.
    ran = await asyncio.to_thread(_run_child, [str(config_path)], None, timeout_s)
    if ran is None:
        return Built.UNAVAILABLE
    returncode, _, tail = ran
    if returncode == EXIT_REFUSED:
        raise HedgerowError(f"the list builder refused the config or lists: {tail}")
    if returncode != 0:
        log.warning("the list builder failed (%s): %s", returncode, tail)
        return Built.UNAVAILABLE
    log.info("lists compiled by a child process in %.2f s", time.monotonic() - started)
    return Built.CURRENT


async def refresh(
    refresher: ListRefresher, now: float, timeout_s: float = TIMEOUT_S
) -> Handoff | None:
    """Refresh the refresher's due lists in a child, without blocking the event loop, and return
    what it learned for refresher.adopt(); None if no child could do it (it could not start,
    failed or overran): the caller refreshes in-process."""
    started = time.monotonic()
    job = job_of(refresher, refresher.due(), now)
    try:
        ran = await asyncio.to_thread(_run_child, ["--refresh"], job, timeout_s)
    except HedgerowError as exc:
        log.warning("%s", exc)
        return None
    if ran is None:
        return None
    returncode, out, tail = ran
    if returncode != 0:
        log.warning("the list refresher failed (%s): %s", returncode, tail)
        return None
    try:
        handed = handoff_of(out)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("the list refresher answered nonsense (%r): %s", exc, tail)
        return None
    log.info("lists refreshed by a child process in %.2f s", time.monotonic() - started)
    return handed


def _run_child(
    args: list[str], job: bytes | None, timeout_s: float
) -> tuple[int, bytes, str] | None:
    """The child's exit status, stdout and the last lines of its stderr (for the log); None if
    it could not start. Blocking."""
    argv = [sys.executable, "-m", "agent.dns.prebuild", *args]
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if job is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        log.warning("cannot start the list builder: %s", exc)
        return None
    try:
        out, err = child.communicate(job, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise HedgerowError(f"the list builder took over {timeout_s:.0f} s (killed)") from None
    tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-3:])
    return child.returncode, out, tail


def main(argv: list[str] | None = None) -> int:
    """Build (or confirm) the compiled index of the config's lists, or with --refresh run the
    refresh job on stdin; 0 on success."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        usage = "usage: python -m agent.dns.prebuild CONFIG | --refresh"
        print(usage, file=sys.stderr)  # noqa: T201
        return 2
    with contextlib.suppress(OSError):
        # Below the server it serves: on a Pi's few cores the build must not slow answers.
        os.nice(NICE)
    if args[0] == "--refresh":
        return _refresh_main()
    try:
        config = load_config(Path(args[0]))
        cache_dir = config.server.list_cache_dir
        if not usable(cache_dir):
            log.error("not running under the installation's hash seed: nothing to prebuild")
            return 1
        ListRefresher(config.lists, cache_dir, compiled=True).load()
    except HedgerowError as exc:
        log.error("%s", exc)
        return EXIT_REFUSED
    return 0


def _refresh_main() -> int:
    """The refresh job on stdin, its outcome on stdout. Exits non-zero only for a bug or an
    unpinned process (the server then refreshes in-process), never for a bad download."""
    job = sys.stdin.buffer.read()
    cache_dir = Path(json.loads(job)["cache_dir"])
    if not usable(cache_dir):
        log.error("not running under the installation's hash seed: nothing to refresh")
        return 1
    sys.stdout.buffer.write(run_job(job))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
