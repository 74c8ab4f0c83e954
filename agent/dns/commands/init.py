"""init: write the commented starter hedgerow-dns.toml for a primary school (agent/dns/starter.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import HedgerowError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add init to the hedgerow-dns parser."""
    p = sub.add_parser(
        "init",
        help="write a commented starter hedgerow-dns.toml (refuses to overwrite)",
        description="Writes a commented hedgerow-dns.toml for a primary school: pupils, staff "
        "and guests groups with the recommended categories (under the names the hub knows), "
        "the lists commented out until you have them. It passes check as written.",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("hedgerow-dns.toml"),
        help="where to write it (default: hedgerow-dns.toml here); never overwritten",
    )
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    """Write the starter; an existing file is an error, left as it was."""
    from agent.dns.starter import starter_text

    path: Path = args.out
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(starter_text())
    except FileExistsError:
        raise HedgerowError(f"{path}: already exists; not overwriting it (choose --out)") from None
    except OSError as exc:
        raise HedgerowError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    print(f"wrote {path}")
    print(
        f"next: set the groups' clients and the upstream servers, turn on the lists you have, "
        f"then: hedgerow-dns check --config {path}"
    )
    return 0
