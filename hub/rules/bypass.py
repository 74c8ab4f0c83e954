"""bypass: attempts to get round the filter. Blocked lookups in the bypass categories (by
default the shared vocabulary's: the filter's own anti-bypass answers such as
use-application-dns.net, DoH, DoT, VPN, proxy, Tor) and "bypass" events from the laptop agent
(`detail.method`: dot, doq, doh, dns_elsewhere, flagged_app, tunnel, hardcoded_dns...; with
`detail.remote`, `detail.port` and `detail.process`, said as "to 1.1.1.1 port 853, by the
program firefox"). An attempt is judged once: a summary's attempt that
an earlier event raised already adds nothing (hub.rules.attempts.count_once)."""

from __future__ import annotations

from typing import Any

from common.categories import BYPASS
from hub.alerts import Finding, report_finding
from hub.model import StoredReport
from hub.rules.attempts import attempts_of, blocked_names
from hub.rules.settings import RulesConfig
from hub.rules.wording import category_label, client_key, group_of, who
from hub.store import Database

RULE = BYPASS
_WHAT_KEYS = ("method", "kind", "what")  # where an agent's detail says which bypass it saw
_LAPTOP_KEYS = ("remote", "port", "proto", "process")  # where to, how and which program
MAX_SHOWN = 100  # what a sentence shows of an address or a program name


def _said(value: Any) -> str | None:
    """A detail value worth saying: not absent, empty or the agent's 0 for "no port"."""
    if value is None or value == "" or value == 0 or isinstance(value, bool):
        return None
    return str(value)[:MAX_SHOWN]


def _where(detail: dict[str, Any]) -> list[str]:
    """The laptop agent's `remote`, `port`, `proto` and `process` as words: "to 1.1.1.1 port
    853 over TCP", "by the program firefox"."""
    remote, port, proto, process = (_said(detail.get(k)) for k in _LAPTOP_KEYS)
    to = " ".join(
        part
        for part in (
            f"to {remote}" if remote else "",
            f"port {port}" if port else "",
            f"over {proto.upper()}" if proto else "",
        )
        if part
    )
    parts = [to] if to else []
    if process:
        parts.append(f"by the program {process}")
    return parts


def event_method(payload: dict[str, Any]) -> tuple[str, str, str]:
    """(method, words, description) of a "bypass" event: what was tried (the event's
    category, else its detail's method: the alert key), how to say it (the detail's method
    where it names one, as it is the more precise: the laptop agent sends `doq` under the
    category `dot`), and its detail as text."""
    detail = payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    found = [detail[k] for k in _WHAT_KEYS if isinstance(detail.get(k), str) and detail[k]]
    method = payload.get("category")
    if not isinstance(method, str) or not method:
        method = found[0] if found else "unknown"
    words = category_label(found[0] if found else method)
    shown = {
        k: v
        for k, v in detail.items()
        if k not in _WHAT_KEYS + _LAPTOP_KEYS and v not in (None, "")
    }
    parts = _where(detail)
    parts += [f"{k} {v}" for k, v in sorted(shown.items())]
    description = ", ".join(parts)
    name = payload.get("name")
    if isinstance(name, str) and name:
        description = f"{name}, {description}" if description else name
    return method, words, description[:200]


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding per bypass category blocked in this report, or for a "bypass" event."""
    rule = rules.bypass
    if not rule.enabled or rule.severity == 0:
        return []
    categories = sorted(c for c in attempts_of(report) if c in rule.categories)
    event = report.payload.get("type") == "bypass"
    if not categories and not event:
        return []
    subject = who(report)
    found: list[tuple[str, str]] = []  # (key, summary)
    for category in categories:
        names = blocked_names(report.payload, category)
        shown = f" ({', '.join(names)})" if names else ""
        found.append(
            (
                category,
                f"{subject} tried to get round the filter with {category_label(category)}"
                f"{shown}; it was blocked.",
            )
        )
    if event:
        method, words, description = event_method(report.payload)
        shown = f": {description}" if description else ""
        found.append((method, f"{subject} tried to get round the filter ({words}{shown})."))
    return [
        report_finding(
            report,
            rule=RULE,
            severity=rule.severity,
            group=group_of(report),
            key=key + client_key(report),
            summary=summary,
        )
        for key, summary in found
    ]
