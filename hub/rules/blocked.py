"""blocked_content: blocked attempts by category, each category with a severity and a threshold
of N attempts in M minutes (by default 1 in 1 from severity 4 up, 3 in 10 below).

A report is judged on the attempts it adds (an event's attempt that an earlier summary counts
adds none: hub.rules.attempts.count_once); the number in the sentence is what the report says,
with the window's other reports. Behind a Pi, an alert is about one category and one device,
as hub.rules.wording.client_identity names it (its device name, else MAC, else address: the
key of a client with no name is what it always was). A category no rule covers is logged once
per process, so the attempts that raise nothing are seen (hedgerow-hub check warns about those
it can know of)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from common.categories import BLOCKED_CONTENT
from hub.alerts import Finding, report_finding
from hub.model import StoredReport
from hub.rules.attempts import (
    WindowQuery,
    attempts_of,
    blocked_attempts,
    blocked_names,
    window_attempts_many,
)
from hub.rules.settings import CategoryRule, RulesConfig, covering_rule
from hub.rules.wording import category_label, client_key, group_of, plural, who
from hub.store import Database

log = logging.getLogger(__name__)

RULE = BLOCKED_CONTENT
_UNCOVERED_LOGGED: set[str] = set()  # categories already logged as covered by no rule
_UNCOVERED_LOG_LIMIT = 1000


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
    # (report index, category, threshold, attempts this report says: a summary's whole count)
    candidates: list[tuple[int, str, CategoryRule, int]] = []
    for i, report in enumerate(reports):
        added = attempts_of(report)
        if not added:
            continue
        says = blocked_attempts(report.payload)
        for category in sorted(added):
            if category in rules.bypass.categories:
                continue  # the bypass rule's business
            threshold = rules.blocked.category(category)
            if threshold.severity != 0:
                candidates.append((i, category, threshold, says.get(category, added[category])))
            elif covering_rule(rules, category) is None:
                _log_uncovered(category)
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
            report_finding(
                report,
                rule=RULE,
                severity=threshold.severity,
                group=group_of(report),
                key=category + client_key(report),
                summary=sentence(who(report), category, total, minutes, names),
                evidence=tuple(ids),
                count=max(1, attempts_of(report)[category]),  # what this report adds
                opens_with=total,  # a new alert stands for every attempt in the window
            )
        )
    return findings


def _log_uncovered(category: str) -> None:
    """Say once that blocked lookups arrive in a category no rule covers."""
    if category in _UNCOVERED_LOGGED or len(_UNCOVERED_LOGGED) >= _UNCOVERED_LOG_LIMIT:
        return
    _UNCOVERED_LOGGED.add(category)
    log.warning(
        "blocked lookups in category %r reach the hub and no rule covers it, so they raise no "
        "alert: give it a severity in [rules.blocked_content.categories] or use a shared "
        "category name (docs/categories.md)",
        category,
    )
