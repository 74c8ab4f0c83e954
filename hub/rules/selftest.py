"""selftest: a DNS filter ran `hedgerow-dns selftest` and sent the result (event type
"selftest", docs/protocol.md section 6.4).

Every run goes into the checks register (hub/checks.py) as the filter reported it, recorded by
the device, whatever [rules.selftest] says: the register is the record the governors' review
reads. A run in which a check failed is also an alert (key `selftest`, one per device, at
[rules.selftest] severity): a category the school blocks answered for a group, so the filter is
not doing what the policy says. The next run with no failures closes it. Only a DNS filter
(class `sinkhole`) runs the self-test; the event from any other device is stored and ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from common.wire.header import Kind
from hub.alerts import Finding, find_active, report_finding, resolve
from hub.checks import CheckError, add_check, selftest_check
from hub.model import StoredReport
from hub.rules.settings import RulesConfig
from hub.rules.wording import device_label, event_time, plural, when
from hub.store import Database

log = logging.getLogger(__name__)

RULE = "selftest"
EVENT = "selftest"
KEY = "selftest"


def _summary(detail: dict[str, Any]) -> dict[str, Any]:
    """The selftest summary in the event: `not_testable` is the group names joined by commas."""
    untested = detail.get("not_testable", "")
    groups = [g for g in untested.split(",") if g] if isinstance(untested, str) else []
    return {**detail, "not_testable": groups}


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """Record a selftest event in the checks register; a finding if a check failed."""
    if report.kind != Kind.EVENT or report.payload.get("type") != EVENT:
        return []
    if report.device_class != "sinkhole":
        return []
    detail = report.payload.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    try:
        what, result, passed, failed = selftest_check(_summary(detail))
    except CheckError as exc:
        log.warning("selftest event %d from %s/%s: %s", report.id, report.site, report.device, exc)
        return []
    failures = detail.get("failures")
    if isinstance(failures, str) and failures:
        what += "; failed: " + failures
    at = event_time(report)
    add_check(
        db,
        at_ms=min(at, report.received_ms),
        recorded_ms=report.received_ms,
        recorded_by=f"{report.site}/{report.device}",
        kind="selftest",
        what=what[:2000],
        result=result,
        action="",
        passed=passed,
        failed=failed,
    )
    rule = rules.selftest
    if failed == 0 and passed > 0:
        found = find_active(db, report.site, report.device, RULE, KEY)
        if found is not None:
            resolve(db, found.id, report.received_ms, "the next self-test passed")
        return []
    if not rule.enabled:
        return []
    label = device_label(report.site, report.device, report.device_class)
    summary = (
        f"The filtering self-test on {label} at {when(at, rules.zone)} (school time) failed "
        f"{plural(failed, 'check', 'checks')} of {passed + failed}: a blocked category answered."
        if failed
        else f"The filtering self-test on {label} at {when(at, rules.zone)} (school time) "
        "could test nothing."
    )
    return [
        report_finding(
            report, rule=RULE, severity=rule.severity, group=None, key=KEY, summary=summary
        )
    ]
