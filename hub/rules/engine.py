"""The rule engine: runs every rule over each stored report, rejection and tick, and records
what they find as alerts.

A rule that trips over an odd payload is logged and counted, never raised (mitmproxy's
safecall): one strange report must not stop ingest. A StoreError is raised, so that the
caller's batch rolls back and nothing half-written commits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec

from hub.alerts import AlertListener, Finding, record_many
from hub.config import load_config
from hub.errors import StoreError
from hub.model import StoredReport
from hub.rules import (
    blocked,
    bypass,
    concern,
    health,
    offsite,
    security,
    selftest,
    silent,
    tamper,
)
from hub.rules.attempts import count_once
from hub.rules.settings import RulesConfig, load_rules
from hub.store import Database

log = logging.getLogger(__name__)
P = ParamSpec("P")

# A device heard less than this long ago (hub clock) has no silent_device alert to resolve: a
# tick opens one only after at least 2 minutes of silence (the smallest sinkhole_minutes), in
# any hub process. Skipping the lookup saves a query per report.
HEARD_MEMO_MS = 30_000
_HEARD_MEMO_SIZE = 100_000

Check = Callable[[Database, RulesConfig, StoredReport], list[Finding]]
CheckMany = Callable[[Database, RulesConfig, Sequence[StoredReport]], list[list[Finding]]]

# The order findings are recorded in; every rule sees the same report independently. A rule
# with a check_many reads the database once for a whole batch (its check() is the same code
# for one report); the others are called per report.
REPORT_RULES: tuple[tuple[str, Check, CheckMany | None], ...] = (
    (concern.RULE, concern.check, None),  # first: a person asked for help
    (blocked.RULE, blocked.check, blocked.check_many),
    (bypass.RULE, bypass.check, None),
    (tamper.RULE, tamper.check, None),
    (offsite.RULE, offsite.check, None),
    (health.RULE, health.check, None),
    (selftest.RULE, selftest.check, None),
)


class RuleEngine:
    """Evaluates the configured rules; its rules can be swapped while it runs (SIGHUP)."""

    def __init__(self, rules: RulesConfig, listener: AlertListener | None = None) -> None:
        self._rules = rules
        self._listener = listener
        self.failures: Counter[str] = Counter()  # rule name -> times it failed and was skipped
        self._heard: dict[tuple[str, str], int] = {}  # (site, device) -> received_ms checked

    @property
    def rules(self) -> RulesConfig:
        """The rules in force."""
        return self._rules

    def replace_rules(self, rules: RulesConfig) -> None:
        """Swap in new, already validated rules; evaluations in flight finish on the old ones."""
        self._rules = rules  # one reference swap: a reader sees the old or the new, whole
        log.info("rules replaced")

    def reload(self, path: Path) -> RulesConfig:
        """Read hub.toml again and swap its rules in: all or nothing. On ConfigError the old
        rules stay in force and the error propagates for the caller to log."""
        rules = load_rules(load_config(path))
        self.replace_rules(rules)
        return rules

    def _safely(
        self, name: str, fn: Callable[P, list[Finding]], *args: P.args, **kwargs: P.kwargs
    ) -> list[Finding]:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception:
            self.failures[name] += 1
            log.exception("rule %s failed and was skipped (%d failures)", name, self.failures[name])
            return []

    def _record(self, db: Database, rules: RulesConfig, findings: Sequence[Finding]) -> None:
        record_many(db, findings, rules.policy, self._listener, self._record_failed)

    def _record_failed(self, finding: Finding, exc: Exception) -> None:
        self.failures[f"record:{finding.rule}"] += 1
        log.error("could not record a %s finding: %r", finding.rule, exc, exc_info=exc)

    def _check_all(
        self,
        db: Database,
        rules: RulesConfig,
        name: str,
        check: Check,
        check_many: CheckMany | None,
        reports: Sequence[StoredReport],
    ) -> list[list[Finding]]:
        """One rule's findings per report. If the batch check trips over an odd payload, each
        report is checked alone, so only the odd one loses this rule."""
        if check_many is not None and len(reports) > 1:
            try:
                return check_many(db, rules, reports)
            except StoreError:
                raise
            except Exception as exc:
                log.warning(
                    "rule %s failed on a batch (%r); checking its reports one by one", name, exc
                )
        found: list[list[Finding]] = []
        for report in reports:  # _safely() written out: this runs per report and rule
            try:
                found.append(check(db, rules, report))
            except StoreError:
                raise
            except Exception:
                self.failures[name] += 1
                log.exception(
                    "rule %s failed and was skipped (%d failures)", name, self.failures[name]
                )
                found.append([])
        return found

    def evaluate(self, db: Database, report: StoredReport) -> None:
        """Run the report rules over a stored report, inside the caller's transaction (never
        commits). Call after the report row is inserted."""
        self.evaluate_batch(db, [report])

    def evaluate_batch(self, db: Database, reports: Sequence[StoredReport]) -> None:
        """Run the report rules over a batch of stored reports, inside the caller's transaction
        (never commits): the same alerts as evaluate() on each in turn, with a few statements
        per rule and batch instead of a few per report. Call after the rows are inserted."""
        rules = self._rules  # one snapshot for the whole batch
        reports = self._count_once(db, reports)
        unchecked: dict[tuple[str, str], StoredReport] = {}
        for report in reports:
            device = (report.site, report.device)
            checked = self._heard.get(device)
            if checked is None or not 0 <= report.received_ms - checked < HEARD_MEMO_MS:
                unchecked.setdefault(device, report)
        if unchecked:
            silent.heard(db, list(unchecked.values()))
            if len(self._heard) + len(unchecked) > _HEARD_MEMO_SIZE:
                self._heard.clear()
            self._heard.update((d, r.received_ms) for d, r in unchecked.items())
        per_rule = [
            self._check_all(db, rules, name, check, check_many, reports)
            for name, check, check_many in REPORT_RULES
        ]
        # Recorded report by report, rule by rule: the order evaluate() gives each in turn.
        self._record(
            db, rules, [f for i in range(len(reports)) for found in per_rule for f in found[i]]
        )

    def _count_once(self, db: Database, reports: Sequence[StoredReport]) -> list[StoredReport]:
        """The reports with the attempts each adds, an event and the summary covering it counted
        once (hub.rules.attempts.count_once). Should that trip over an odd payload, the batch
        is judged as it stands: counted twice, never lost."""
        try:
            return count_once(db, reports)
        except StoreError:
            raise
        except Exception:
            self.failures["count_once"] += 1
            log.exception("could not match events to summaries; counting this batch as it is")
            return list(reports)

    def on_rejection(
        self, db: Database, reason: str, site: str | None, device: str | None, now_ms: int
    ) -> None:
        """Count a refused envelope towards a security burst. Call after inserting its row in
        the rejections table, inside the caller's transaction (never commits)."""
        rules = self._rules
        findings = self._safely(
            security.RULE, security.check, db, rules, reason, site, device, now_ms
        )
        self._record(db, rules, findings)

    def tick(self, db: Database, now_ms: int) -> None:
        """Periodic checks (~30 s): silent devices, stale policies and last wills whose grace
        period is over. Commits its own transaction, so call it outside any other."""
        rules = self._rules
        self._heard.clear()  # this tick may open silent_device alerts
        with db.transaction():
            self._record(db, rules, self._safely(silent.RULE, silent.tick, db, rules, now_ms))
            findings = self._safely("policy_stale", tamper.stale_policies, db, rules, now_ms)
            self._record(db, rules, findings)
            findings = self._safely("last_will", tamper.last_wills, db, rules, now_ms)
            self._record(db, rules, findings)
