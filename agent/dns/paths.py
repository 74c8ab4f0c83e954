"""Default locations on the Pi (kept import-free: the command line reads them before anything
heavy is loaded)."""

from pathlib import Path

LIST_CACHE_DIR = Path("/var/cache/hedgerow/lists")  # [server] list_cache_dir
