"""concern: a pupil or teacher used `hedgerow-agent report-concern` to report something upsetting
or unsuitable seen on a laptop (event type "concern", docs/protocol.md section 6.4).

Always an alert, at `[rules.concern] severity`, and never merged with an earlier concern: each
report is its own key, so a second concern an hour later is a second alert for the DSL to
read. The sentence says only that a concern was reported, on which laptop and when; what was
written (`detail.text`, which may name people) stays in the report, the alert's evidence, and
so never reaches an email subject or a digest line.
"""

from __future__ import annotations

from common.wire.header import Kind
from hub.alerts import Finding, report_finding
from hub.model import StoredReport
from hub.rules.settings import RulesConfig
from hub.rules.wording import device_label, event_time, when
from hub.store import Database

RULE = "concern"
EVENT = "concern"


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding for every "concern" event."""
    rule = rules.concern
    if not rule.enabled or report.kind != Kind.EVENT or report.payload.get("type") != EVENT:
        return []
    detail = report.payload.get("detail")
    text = detail.get("text") if isinstance(detail, dict) else None
    written = (
        "with a written description (in the report: see the evidence)"
        if isinstance(text, str) and text.strip()
        else "without a written description"
    )
    label = device_label(report.site, report.device, report.device_class)
    at = when(event_time(report), rules.zone)
    summary = f"A concern was reported on {label} at {at} (school time), {written}."
    return [
        report_finding(
            report,
            rule=RULE,
            severity=rule.severity,
            group=report.group,
            key=f"concern:{report.id}",  # one alert per concern: never folded into another
            summary=summary,
        )
    ]
