"""hedgerow-dns: the command line. Each command lives in agent/dns/commands/.

The command modules import their implementation inside their cmd_ function, so that `serve`
does not carry what only `enroll` or `explain` need (the process stays small: docs/dns.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent.cli import run
from agent.dns.commands import check, enroll, explain, selftest, serve

COMMAND_MODULES = [serve, check, explain, selftest]  # then enroll


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser for this command line (enroll's arguments only when it is chosen)."""
    parser = argparse.ArgumentParser(
        prog="hedgerow-dns",
        description="Hedgerow DNS filter: answers the school's DNS queries, blocking by group "
        "and category, forcing SafeSearch and closing DNS bypasses.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    enroll.register(sub, arguments=_command_of(sys.argv[1:] if argv is None else argv) == "enroll")
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (no top-level option takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-dns console script."""
    return run("hedgerow-dns", build_parser(argv).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
