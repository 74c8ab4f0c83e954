"""Reload without a stall: the lists are parsed and the index built in a child process, which
writes the compiled index (lists/snapshot.py); the serving process then only loads that file.

Why a process and not a thread: parsing 1,000,000 names and filling the table is CPU work that
holds the GIL (C-level loops such as map(hash, ...) hold it for their whole run), so in a
thread it held answers back for 80-310 ms per reload and raised the peak to old index + new
index + parse buffers. The child inherits the pinned hash seed (lists/hashseed.py), so what it
writes is what the server's own load() accepts; if anything goes wrong the server still loads
in a worker thread as before, and the list code decides, as always, what is valid.

    python -m agent.dns.prebuild CONFIG     # exit 0: the compiled index is current
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from agent.dns.config import load_config
from agent.dns.lists import ListRefresher
from agent.dns.lists.hashseed import pinned
from agent.errors import HedgerowError

log = logging.getLogger(__name__)

TIMEOUT_S = 600.0


def usable(cache_dir: Path) -> bool:
    """True if a child's compiled index would be loadable here (same pinned hash seed)."""
    return pinned(cache_dir)


async def prebuild(config_path: Path, timeout_s: float = TIMEOUT_S) -> bool:
    """Run the child and wait for it without blocking the event loop; True if it wrote (or
    found) a current compiled index. Never raises: the caller loads lists either way."""
    started = time.monotonic()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.dns.prebuild",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        log.warning("cannot start the list builder: %s; loading lists in this process", exc)
        return False
    try:
        _, err = await asyncio.wait_for(child.communicate(), timeout_s)
    except TimeoutError:
        child.kill()
        await child.wait()
        log.warning("the list builder took over %.0f s; loading lists in this process", timeout_s)
        return False
    if child.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        log.warning("the list builder failed (%s): %s", child.returncode, " | ".join(tail))
        return False
    log.info("lists compiled by a child process in %.2f s", time.monotonic() - started)
    return True


def main(argv: list[str] | None = None) -> int:
    """Build (or confirm) the compiled index of the config's lists; 0 on success."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m agent.dns.prebuild CONFIG", file=sys.stderr)  # noqa: T201
        return 2
    try:
        config = load_config(Path(args[0]))
        cache_dir = config.server.list_cache_dir
        if not usable(cache_dir):
            log.error("not running under the installation's hash seed: nothing to prebuild")
            return 1
        ListRefresher(config.lists, cache_dir, compiled=True).load()
    except HedgerowError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
