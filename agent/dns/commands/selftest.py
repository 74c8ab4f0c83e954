"""selftest: the annual filtering check, asked through the running server (see selftest.py)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import HedgerowError

if TYPE_CHECKING:
    from agent.dns.config import Endpoint, ReportConfig
    from agent.dns.probe import GroupResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add selftest to the hedgerow-dns parser."""
    p = sub.add_parser("selftest", help="query samples of every blocked category per group")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.add_argument("--server", help="HOST:PORT of the running server (default: first listen)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per try (two tries)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not send the result to the hub's checks register (default: sent when [report] "
        "is configured)",
    )
    p.set_defaults(func=cmd_selftest)


def server_of(text: str | None, listen: tuple[Endpoint, ...]) -> tuple[str, int]:
    """The address to ask: --server, else the first listen address (wildcards: loopback)."""
    if text is not None:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise HedgerowError(f"--server {text}: must be HOST:PORT or [IPv6]:PORT")
        return host.strip("[]"), int(port)
    local_host, local_port, _ = listen[0].local()
    return local_host, local_port


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run every check; exit 0 if every testable check passed, 1 otherwise."""
    from agent.dns.probe import answering, run
    from agent.dns.service import load_all

    loaded = load_all(args.config)
    server = server_of(args.server, loaded.config.server.listen)
    if not answering(server, args.timeout):
        shown = f"[{server[0]}]:{server[1]}" if ":" in server[0] else f"{server[0]}:{server[1]}"
        raise HedgerowError(
            f"no DNS server answers at {shown}: is hedgerow-dns serve running? "
            "(--server HOST:PORT asks another address)"
        )
    results = run(loaded, server, time.time(), args.timeout)
    checks = [c for r in results for c in r.checks]
    passed = sum(c.ok for c in checks)
    failed = len(checks) - passed
    untestable = [r.group for r in results if not r.testable]
    summary = {
        "server": f"{server[0]}:{server[1]}",
        "passed": passed,
        "failed": failed,
        "not_testable": untestable,
        "ok": failed == 0 and bool(checks),
    }
    failures = [
        f"{r.group} {c.what} {c.name or '-'}: expected {c.expected}, got {c.got}"
        for r in results
        for c in r.checks
        if not c.ok
    ]
    handed = None if args.no_report else _hand_over(loaded.config.report, summary, failures)
    if args.json:
        out = {"summary": summary, "groups": [asdict(r) for r in results], "hub": handed}
        print(json.dumps(out, indent=2))
    else:
        for result in results:
            _print(result)
        if handed is not None:
            print(f"hub: {handed}")
        note = f", {len(untestable)} group(s) NOT TESTED from this host" if untestable else ""
        verdict = "PASS" if summary["ok"] else "FAIL"
        print(f"summary: {verdict}: {passed} passed, {failed} failed{note} ({summary['server']})")
    return 0 if summary["ok"] else 1


def _hand_over(report: ReportConfig | None, summary: dict[str, Any], failures: list[str]) -> str:
    """Leave the result for the running filter to send to the hub's checks register; what
    happened, in words. HedgerowError if it cannot be left (the check would be lost)."""
    from agent.dns.selftest_inbox import drop, event_detail

    if report is None:
        return "not sent: no [report] section (this filter reports to no hub)"
    try:
        path = drop(report.identity, int(time.time() * 1000), event_detail(summary, failures))
    except OSError as exc:
        raise HedgerowError(
            f"the result could not be left for the hub in {report.identity}: {exc} "
            "(run as the hedgerow-dns user or root; --no-report skips it)"
        ) from exc
    return f"the running filter sends it to the checks register ({path.name})"


def _print(result: GroupResult) -> None:
    if not result.testable:
        print(f"group {result.group}: NOT TESTED: {result.note}")
        return
    print(f"group {result.group} ({result.note}):")
    for check in result.checks:
        mark = "pass" if check.ok else "FAIL"
        name = check.name or "-"
        print(f"  {mark} {check.what} {name}: expected {check.expected}, got {check.got}")
