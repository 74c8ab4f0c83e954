"""The first thing `hedgerow-dns` does: pin the installation's hash seed (agent/filter/hashseed.py)
from the config file, before the command modules and the filter engine are imported."""

from __future__ import annotations

import tomllib
from pathlib import Path

from agent.dns.paths import LIST_CACHE_DIR
from agent.filter.hashseed import pin


def pin_early(config: Path) -> None:
    """pin() from the config file's [server] list_cache_dir, read with nothing but tomllib:
    called before the command line imports anything heavy, so the first process of a start
    costs an interpreter and not the whole filter (about 0.2 s here). Any problem with the file
    is left to the full config reader, which runs next and explains it."""
    try:
        with open(config, "rb") as handle:
            server = tomllib.load(handle).get("server", {})
        cache_dir = Path(server.get("list_cache_dir", LIST_CACHE_DIR))
    except (OSError, ValueError, TypeError, AttributeError):
        return
    pin(cache_dir)
