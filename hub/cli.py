"""hedgerow-hub: the command line. Each command group lives in hub/commands/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.cli_runner import run


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    # Imported here, not at the top: multiprocessing's spawn imports the main module again in
    # every opening worker process (hub.ingest.pool), which needs none of the commands.
    from hub.commands import alerts, data, devices, enroll, notify, pki, policy, serve, setup, user

    parser = argparse.ArgumentParser(
        prog="hedgerow-hub",
        description="Hedgerow hub: verifies, stores and evaluates what the school's DNS filters "
        "and laptops report, raises graded alerts and notifies the safeguarding team.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (setup, alerts, serve, devices, data, enroll, policy, notify, user, pki):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-hub console script."""
    return run("hedgerow-hub", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
