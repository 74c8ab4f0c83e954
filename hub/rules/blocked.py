"""blocked_content: blocked attempts by category, each category with a severity and a threshold
of N attempts in M minutes (by default 1 in 1 from severity 4 up, 3 in 10 below)."""

from __future__ import annotations

from collections.abc import Sequence

from hub.alerts import Finding
from hub.model import StoredReport
from hub.rules.attempts import WindowQuery, attempts_of, blocked_names, window_attempts_many
from hub.rules.settings import CategoryRule, RulesConfig
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
    return check_many(db, rules, [report])[0]


def check_many(
    db: Database, rules: RulesConfig, reports: Sequence[StoredReport]
) -> list[list[Finding]]:
    """check() for each of a batch's reports, with one window read for the whole batch."""
    if not rules.blocked.enabled:
        return [[] for _ in reports]
    # (report index, category, threshold, attempts in this report alone)
    candidates: list[tuple[int, str, CategoryRule, int]] = []
    for i, report in enumerate(reports):
        for category, attempts in sorted(attempts_of(report).items()):
            if category in rules.bypass.categories:
                continue  # the bypass rule's business
            threshold = rules.blocked.category(category)
            if threshold.severity != 0:
                candidates.append((i, category, threshold, attempts))
    windowed = [c for c in candidates if c[3] < c[2].attempts]
    totals = dict(
        zip(
            ((i, category) for i, category, _, _ in windowed),
            window_attempts_many(
                db,
                [WindowQuery(reports[i], category, t.minutes) for i, category, t, _ in windowed],
            ),
            strict=True,
        )
    )
    findings: list[list[Finding]] = [[] for _ in reports]
    for i, category, threshold, attempts in candidates:
        report = reports[i]
        if attempts >= threshold.attempts:
            total, ids, minutes = attempts, [report.id], None
        else:
            total, ids = totals[(i, category)]
            minutes = threshold.minutes
        if total < threshold.attempts:
            continue
        names = blocked_names(report.payload, category)
        findings[i].append(
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
