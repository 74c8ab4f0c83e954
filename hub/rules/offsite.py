"""offsite_use: a laptop reports use while off site, graded by device class and school-local hours.

Hours are judged on the device's clock (the report's time), so a summary spooled overnight and
delivered in the morning is still judged as night-time use.
"""

from __future__ import annotations

from common.wire.header import Kind
from hub.alerts import Finding, report_finding
from hub.model import StoredReport
from hub.rules.hours import minute_of_day
from hub.rules.settings import OffsiteRule, RulesConfig
from hub.rules.wording import clock, device_label
from hub.store import Database

RULE = "offsite_use"


def grade(rule: OffsiteRule, device_class: str, minute: int) -> tuple[int, str]:
    """The severity of off-site use at this minute of the local day, and why (0: no alert)."""
    if device_class == "pupil-laptop":
        if rule.night.contains(minute):
            return rule.pupil_night_severity, f"during the night hours {rule.night}"
        return rule.pupil_severity, ""
    if device_class == "staff-laptop":
        if rule.staff_hours is not None and not rule.staff_hours.contains(minute):
            return rule.staff_out_of_hours_severity, f"outside staff hours {rule.staff_hours}"
        return rule.staff_severity, ""
    return 0, ""


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding if a summary or heartbeat says the laptop is off site."""
    if not rules.offsite.enabled or report.kind not in (Kind.SUMMARY, Kind.HEARTBEAT):
        return []
    if report.payload.get("location") != "offsite":
        return []
    zone = rules.zone
    severity, why = grade(rules.offsite, report.device_class, minute_of_day(report.time_ms, zone))
    if severity == 0:
        return []
    label = device_label(report.site, report.device, report.device_class)
    summary = f"{label} was used off site at {clock(report.time_ms, zone)} (school time)"
    summary += f", {why}." if why else "."
    return [
        report_finding(
            report, rule=RULE, severity=severity, group=report.group, key="offsite", summary=summary
        )
    ]
