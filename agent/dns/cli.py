"""hedgerow-dns: the command line. Each command lives in agent/dns/commands/."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent.dns.commands import check, enroll, explain, selftest, serve
from agent.errors import HedgerowError

COMMAND_MODULES = [serve, check, explain, selftest, enroll]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="hedgerow-dns",
        description="Hedgerow DNS filter: answers the school's DNS queries, blocking by group "
        "and category, forcing SafeSearch and closing DNS bypasses.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-dns console script."""
    args = build_parser().parse_args(argv)
    # journald adds its own timestamps: one "level name: message" line per record.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except HedgerowError as exc:
        print(f"hedgerow-dns: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
