"""The DNS service in a process of its own, run by a test under the installation's hash seed (as
`serve` runs), with the hooks of the in-process tests: a short refresh check and a list clock
the test moves by replacing a file that holds epoch seconds. Logs go to stderr, "ready" first;
it stops cleanly when its stdin closes.

    PYTHONHASHSEED=<seed> python -m tests.dns_pinned CONFIG CLOCK_FILE
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tests.dns_support import running_dns


class FileClock:
    """Epoch seconds read from a file the test replaces atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> float:
        return float(self.path.read_text())


def main() -> None:
    """Serve until stdin closes."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, clock = Path(sys.argv[1]), Path(sys.argv[2])
    with running_dns(config, list_clock=FileClock(clock), refresh_check_s=0.05):
        logging.getLogger(__name__).info("ready")
        sys.stdin.read()


if __name__ == "__main__":
    main()
