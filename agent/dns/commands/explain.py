"""explain: what would happen to a name, for which group, and why (list, line, rule)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import HedgerowError

if TYPE_CHECKING:
    from agent.dns.dryrun import Explanation

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
TYPES |= {"SRV": 33, "SVCB": 64, "HTTPS": 65, "ANY": 255}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add explain to the hedgerow-dns parser."""
    p = sub.add_parser("explain", help="say what would happen to a name, and why")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.add_argument("name", help="the name to look up, e.g. www.example.com")
    p.add_argument("--client", help="client IP address (default: explain for every group)")
    p.add_argument("--type", default="A", help="query type: A, AAAA, HTTPS... (default A)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_explain)


def qtype_of(text: str) -> int:
    """A type name or number."""
    if text.upper() in TYPES:
        return TYPES[text.upper()]
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise HedgerowError(f"--type {text}: not a known type name or a number 1..65535")


def type_name(qtype: int) -> str:
    """A type's name (AAAA), or TYPE65280 for one without a name here (RFC 3597)."""
    return next((name for name, number in TYPES.items() if number == qtype), f"TYPE{qtype}")


def client_of(text: str | None) -> str | None:
    """--client as an IP address, or None; anything else is refused (a name, a range...)."""
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise HedgerowError(
            f"--client {text}: not an IP address (explain asks as one client, e.g. "
            "--client 10.1.2.34; leave --client out to explain for every group)"
        ) from None


def cmd_explain(args: argparse.Namespace) -> int:
    """Print the explanation for each group (or the client's group)."""
    from agent.dns.dryrun import explain_query
    from agent.dns.service import load_all
    from agent.filter.lists import explain as explain_lists

    client = client_of(args.client)  # before loading: a bad argument is found at once
    qtype = qtype_of(args.type)
    loaded = load_all(args.config)
    name = args.name.strip(".").lower()
    config = loaded.config
    matches = tuple(explain_lists(name, config.lists, config.server.list_cache_dir))
    results = explain_query(loaded, name, qtype, time.time(), client, matches)
    if args.json:
        print(json.dumps([_as_json(r) for r in results], indent=2))
        return 0
    for result in results:
        _print(result)
    return 0


def _as_json(result: Explanation) -> dict[str, object]:
    data = asdict(result)
    data["type"] = type_name(result.qtype)
    data["verdict"]["kind"] = result.verdict.kind.value
    data["verdict"].pop("labels", None)  # the metrics key, not part of the explanation
    return data


def _print(result: Explanation) -> None:
    who = ""
    if result.client:
        named = ", ".join(x for x in (result.hostname, result.mac) if x) or "no name or MAC known"
        who = f"client {result.client} ({named}), "
    verdict = result.verdict
    print(f"{result.qname} {type_name(result.qtype)}: {who}group {result.group or '-'}")
    print(f"  verdict: {verdict.kind.value}")
    if verdict.category:
        print(f"  category: {verdict.category}")
    if verdict.rule:
        print(f"  rule: {verdict.rule}")
    print(f"  decided by: the {result.link} link")
    reasons = result.unapplied or ("",) * len(result.matches)
    for match, reason in zip(result.matches, reasons, strict=True):
        what = "exception" if match.exception else "rule"
        why = f" (did not apply: {reason})" if reason else ""
        print(
            f"  list {match.category}: {match.source} line {match.line}: {what} {match.rule}{why}"
        )
    for line in result.answer.splitlines():
        print(f"  | {line}")
