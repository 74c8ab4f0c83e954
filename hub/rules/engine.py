"""The rule engine: runs every rule over each stored report, rejection and tick, and records
what they find as alerts.

A rule that trips over an odd payload is logged and counted, never raised (mitmproxy's
safecall): one strange report must not stop ingest. A StoreError is raised, so that the
caller's batch rolls back and nothing half-written commits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

from hub.alerts import Finding, record
from hub.config import load_config
from hub.errors import StoreError
from hub.model import AlertListener, StoredReport
from hub.rules import blocked, bypass, offsite, security, silent, tamper
from hub.rules.config import RulesConfig, load_rules
from hub.store import Database

log = logging.getLogger(__name__)
P = ParamSpec("P")

# A device heard less than this long ago (hub clock) has no silent_device alert to resolve: a
# tick opens one only after at least 2 minutes of silence (the smallest sinkhole_minutes), in
# any hub process. Skipping the lookup saves a query per report.
HEARD_MEMO_MS = 30_000
_HEARD_MEMO_SIZE = 100_000

# The order findings are recorded in; every rule sees the same report independently.
REPORT_RULES: tuple[
    tuple[str, Callable[[Database, RulesConfig, StoredReport], list[Finding]]], ...
] = (
    (blocked.RULE, blocked.check),
    (bypass.RULE, bypass.check),
    (tamper.RULE, tamper.check),
    (offsite.RULE, offsite.check),
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

    def _record(self, db: Database, rules: RulesConfig, findings: list[Finding]) -> None:
        for finding in findings:
            try:
                record(db, finding, rules.policy, self._listener)
            except StoreError:
                raise
            except Exception:
                self.failures[f"record:{finding.rule}"] += 1
                log.exception("could not record a %s finding", finding.rule)

    def evaluate(self, db: Database, report: StoredReport) -> None:
        """Run the report rules over a stored report, inside the caller's transaction (never
        commits). Call after the report row is inserted."""
        rules = self._rules  # one snapshot for the whole report
        device = (report.site, report.device)
        checked = self._heard.get(device)
        if checked is None or not 0 <= report.received_ms - checked < HEARD_MEMO_MS:
            silent.heard(db, report)
            if len(self._heard) >= _HEARD_MEMO_SIZE:
                self._heard.clear()
            self._heard[device] = report.received_ms
        for name, check in REPORT_RULES:
            self._record(db, rules, self._safely(name, check, db, rules, report))

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
