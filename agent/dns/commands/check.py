"""check: validate the config and every list without serving (for ExecStartPre=); say what the
hub does with each category's blocked lookups, and warn about a category no hub rule covers
(the vocabulary the filter and the hub share: common/categories.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add check to the hedgerow-dns parser."""
    p = sub.add_parser("check", help="validate the config and every list; exit 0 or 1")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Print what was checked; errors raise (exit 1 via the CLI)."""
    from agent.dns.config import load_config
    from agent.dns.config.categories import (
        category_lines,
        category_warnings,
        immediate_warnings,
    )
    from agent.dns.service import beacon_key_of
    from agent.filter.lists import check_lists
    from agent.filter.lists import explain as explain_lists
    from common.categories import ANTI_BYPASS

    config = load_config(args.config)
    stats = check_lists(config.lists, config.server.list_cache_dir)
    for item in stats:
        print(
            f"list {item.category}: {item.source}: {item.format}, {item.entries} entries, "
            f"{item.exceptions} exceptions, {item.skipped} skipped, {item.invalid} invalid"
        )
    for group in config.groups:
        for entry in group.allow:
            found = explain_lists(entry, config.lists, config.server.list_cache_dir)
            if any(m.category in config.statutory and not m.exception for m in found):
                print(
                    f"warning: [groups.{group.name}] allow = {entry!r}: on a statutory list, "
                    "so it stays blocked",
                    file=sys.stderr,
                )
    reported = list(config.categories)  # what reports will name: the lists' categories...
    if any(group.block_bypass for group in config.groups):
        reported.append(ANTI_BYPASS)  # ...and the filter's own anti-bypass answers
    for line in category_lines(reported):
        print(line)
    warnings = category_warnings(config.categories)
    if config.report is not None:
        warnings += immediate_warnings(config.report.immediate, reported)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if config.beacon is not None and beacon_key_of(config) is None:
        print(
            f"warning: [beacon] identity = '{config.beacon.identity}': no beacon key yet, "
            "beacon queries will get NXDOMAIN until enrolment",
            file=sys.stderr,
        )
    names = ", ".join(g.name for g in config.groups)
    print(f"ok: {args.config}: {len(stats)} lists, groups {names}")
    return 0
