"""What every Hedgerow command line does around its subcommand: journald-friendly logging,
and one clear line with exit code 1 for errors we raise on purpose (never a traceback)."""

from __future__ import annotations

import argparse
import logging
import sys

from common.errors import HedgerowError


def run(prog: str, args: argparse.Namespace) -> int:
    """Set up logging to stderr and run the chosen subcommand's `func`."""
    # journald adds its own timestamps: one "level name: message" line per record.
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except HedgerowError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
