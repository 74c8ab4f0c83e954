"""bypass: attempts to get round the filter. Blocked lookups in the bypass categories (by
default the shared vocabulary's: the filter's own anti-bypass answers such as
use-application-dns.net, DoH, DoT, VPN, proxy, Tor) and "bypass" events from the laptop agent
(hard-coded DNS, encrypted-DNS ports...). An attempt is judged once: a summary's attempt that
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


def event_method(payload: dict[str, Any]) -> tuple[str, str]:
    """(method, description) of a "bypass" event: what was tried, and its detail as text."""
    detail = payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    method = payload.get("category")
    if not isinstance(method, str) or not method:
        found = [detail[k] for k in _WHAT_KEYS if isinstance(detail.get(k), str) and detail[k]]
        method = found[0] if found else "unknown"
    shown = {k: v for k, v in detail.items() if k not in _WHAT_KEYS}
    description = ", ".join(f"{k} {v}" for k, v in sorted(shown.items()))
    name = payload.get("name")
    if isinstance(name, str) and name:
        description = f"{name}, {description}" if description else name
    return method, description[:200]


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
        method, description = event_method(report.payload)
        shown = f": {description}" if description else ""
        found.append(
            (method, f"{subject} tried to get round the filter ({category_label(method)}{shown}).")
        )
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
