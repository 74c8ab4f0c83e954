"""blocked_content: blocked attempts by category, each category with a severity and a threshold
of N attempts in M minutes (by default 1 in 1 from severity 4 up, 3 in 10 below)."""

from __future__ import annotations

from hub.alerts import Finding
from hub.model import StoredReport
from hub.rules.attempts import blocked_attempts, blocked_names, window_attempts
from hub.rules.config import RulesConfig
from hub.rules.wording import category_label, client_key, group_of, plural, who
from hub.store import Database

RULE = "blocked_content"


def sentence(
    subject: str, category: str, attempts: int, minutes: int | None, names: list[str]
) -> str:
    """E.g. "Pupil laptop cape-primary/lt-042 tried to reach self-harm sites 3 times in 10 minutes;
    all were blocked (a.example)." `minutes` is None when one report alone crossed the threshold."""
    label = category_label(category)
    if attempts == 1:
        article = "an" if label[:1].lower() in "aeiou" else "a"
        text = f"{subject} tried to reach {article} {label} site; it was blocked"
    else:
        span = f" in {plural(minutes, 'minute', 'minutes')}" if minutes is not None else ""
        text = f"{subject} tried to reach {label} sites {attempts} times{span}; all were blocked"
    return text + (f" ({', '.join(names)})." if names else ".")


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """One finding per category whose threshold this report reaches (with earlier reports)."""
    if not rules.blocked.enabled:
        return []
    findings = []
    for category, attempts in sorted(blocked_attempts(report.payload).items()):
        if category in rules.bypass.categories:
            continue  # the bypass rule's business
        threshold = rules.blocked.category(category)
        if threshold.severity == 0:
            continue
        if attempts >= threshold.attempts:
            total, ids, minutes = attempts, [report.id], None
        else:
            total, ids = window_attempts(db, report, category, threshold.minutes)
            minutes = threshold.minutes
        if total < threshold.attempts:
            continue
        names = blocked_names(report.payload, category)
        findings.append(
            Finding(
                rule=RULE,
                severity=threshold.severity,
                site=report.site,
                device=report.device,
                device_class=report.device_class,
                group=group_of(report),
                key=category + client_key(report),
                summary=sentence(who(report), category, total, minutes, names),
                at_ms=report.received_ms,
                evidence=tuple(ids),
            )
        )
    return findings
