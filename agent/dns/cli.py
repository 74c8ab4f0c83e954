"""hedgerow-dns: the command line. Each command lives in agent/dns/commands/.

The command modules import their implementation inside their cmd_ function, so that `serve`
does not carry what only `enroll` or `explain` need (the process stays small: docs/dns.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser for this command line (enroll's arguments only when it is chosen)."""
    from agent.dns.commands import check, enroll, explain, init, selftest, serve, status

    parser = argparse.ArgumentParser(
        prog="hedgerow-dns",
        description="Hedgerow DNS filter: answers the school's DNS queries, blocking by group "
        "and category, forcing SafeSearch and closing DNS bypasses.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (init, serve, check, status, explain, selftest):  # then enroll
        module.register(sub)
    enroll.register(sub, arguments=_command_of(sys.argv[1:] if argv is None else argv) == "enroll")
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (no top-level option takes a value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the hedgerow-dns console script."""
    if argv is None:
        _pin_before_imports(sys.argv[1:])
    from common.cli_runner import run

    return run("hedgerow-dns", build_parser(argv).parse_args(argv))


def _pin_before_imports(argv: Sequence[str]) -> None:
    """`serve` re-executes itself under the installation's hash seed (agent/filter/hashseed.py):
    doing it before the command modules are imported makes the discarded first process cheap."""
    if _command_of(argv) != "serve":
        return
    config = next((a.removeprefix("--config=") for a in argv if a.startswith("--config=")), None)
    if config is None and "--config" in argv[:-1]:
        config = argv[argv.index("--config") + 1]
    if config:
        from pathlib import Path

        from agent.dns.early import pin_early

        pin_early(Path(config))


if __name__ == "__main__":
    sys.exit(main())
