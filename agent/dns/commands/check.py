"""check: validate the config and every list without serving (for ExecStartPre=); say what the
hub does with each category's blocked lookups, and warn about a category no hub rule covers
(the vocabulary the filter and the hub share: common/categories.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.dns.config import DnsConfig
    from agent.filter.lists import ListSpec, ListStats


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add check to the hedgerow-dns parser."""
    p = sub.add_parser("check", help="validate the config and every list; exit 0 or 1")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Print what was checked, or every problem found (config and lists) and exit 1."""
    from agent.dns.config.reader import Recovery, parse_config
    from agent.filter.lists import ListError, check_lists
    from common.tomlconfig import every_problem, load_toml

    path = Path(args.config)
    problems: list[str] = []
    raw = every_problem(lambda: load_toml(path), {}, problems)
    config = None
    if raw is not None:
        recovery = Recovery.of(raw)  # before every_problem cuts anything out of raw
        config = every_problem(lambda: parse_config(raw, path, recovery), raw, problems)
    stats: list[tuple[ListStats, tuple[int, ...]]] = []
    cache_dir = config.server.list_cache_dir if config is not None else None
    for spec in config.lists if config is not None else ():
        try:
            (one,) = check_lists([spec], cache_dir)
            lines = _invalid_lines(spec, cache_dir) if one.invalid else ()
            stats.append((one, lines))
        except ListError as exc:
            found = _invalid_lines(spec, cache_dir)
            problems.append(str(exc) + (f"; {_lines(found, len(found))[2:-1]}" if found else ""))
    if problems or config is None:
        for problem in problems:
            print(f"hedgerow-dns check: {problem}", file=sys.stderr)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    _report(config, stats)
    names = ", ".join(g.name for g in config.groups)
    print(f"ok: {args.config}: {len(stats)} lists, groups {names}")
    return 0


def _report(config: DnsConfig, stats: list[tuple[ListStats, tuple[int, ...]]]) -> None:
    """What each list holds and what the hub does with each category; warnings to stderr."""
    from agent.dns.clients.names import lease_warnings
    from agent.dns.config.categories import (
        category_lines,
        category_warnings,
        immediate_warnings,
    )
    from agent.dns.service import beacon_key_of
    from agent.filter.lists import explain as explain_lists
    from common.categories import ANTI_BYPASS
    from common.tomlconfig import toml_value

    for item, lines in stats:
        print(
            f"list {item.category}: {item.source}: {item.format}, {item.entries} entries, "
            f"{item.exceptions} exceptions, {item.skipped} skipped, {item.invalid} invalid"
            + _lines(lines, item.invalid)
        )
    for group in config.groups:
        for entry in group.allow:
            found = explain_lists(entry, config.lists, config.server.list_cache_dir)
            if any(m.category in config.statutory and not m.exception for m in found):
                print(
                    f"warning: [groups.{group.name}] allow = {toml_value(entry)}: on a statutory "
                    "list, so it stays blocked",
                    file=sys.stderr,
                )
        if group.pupils and not group.block_encrypted_dns:
            print(
                f"warning: [groups.{group.name}] block_encrypted_dns is off (it follows "
                "block_bypass unless set): pupils in the group can "
                "switch to a public encrypted DNS resolver (dns.google, cloudflare-dns.com...) "
                "and get past the filter; if the group holds no pupils, say pupils = false",
                file=sys.stderr,
            )
    reported = list(config.categories)  # what reports will name: the lists' categories...
    if any(group.block_bypass or group.block_encrypted_dns for group in config.groups):
        reported.append(ANTI_BYPASS)  # ...and the filter's own anti-bypass answers
    for line in category_lines(reported):
        print(line)
    warnings = category_warnings(config.categories)
    if not config.statutory:
        warnings.append(
            "no statutory [[lists]] entry: the DfE filtering standards expect the IWF list and "
            "the police-assessed terrorism list blocked for everyone (category iwf and "
            "terrorism, statutory = true)"
        )
    if config.report is not None:
        warnings += immediate_warnings(config.report.immediate, reported)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if config.beacon is not None and beacon_key_of(config) is None:
        print(
            f"warning: [beacon] identity = {toml_value(str(config.beacon.identity))}: no beacon "
            "key yet, beacon queries will get NXDOMAIN until enrolment",
            file=sys.stderr,
        )
    for warning in lease_warnings(config.clients):
        print(f"warning: {warning}", file=sys.stderr)


def _invalid_lines(spec: ListSpec, cache_dir: Path | None) -> tuple[int, ...]:
    """The first few invalid lines of a list, read again ((): the list cannot be read)."""
    from agent.filter.lists import ListError
    from agent.filter.lists.invalid_lines import invalid_lines
    from agent.filter.lists.load import readable_copy

    try:
        with readable_copy(spec, cache_dir) as path:
            return invalid_lines(path, spec.source)
    except ListError:
        return ()


def _lines(numbers: tuple[int, ...], invalid: int) -> str:
    """(invalid lines 3, 17, 40 and 2 more)": where to look first in the list file."""
    if not numbers:
        return ""
    more = f" and {invalid - len(numbers)} more" if invalid > len(numbers) else ""
    label = "line" if len(numbers) == 1 and not more else "lines"
    return f" (invalid {label} {', '.join(map(str, numbers))}{more})"
