"""selftest: the annual filtering check, asked through the running server (see selftest.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add selftest to the hedgerow-dns parser."""
    p = sub.add_parser("selftest", help="query samples of every blocked category per group")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.add_argument("--server", help="HOST:PORT of the running server (default: first listen)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_selftest)


def cmd_selftest(args: argparse.Namespace) -> int:
    """Not written yet."""
    print("hedgerow-dns selftest: not implemented yet")
    return 2
