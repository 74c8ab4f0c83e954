"""offsite_use: a laptop reports use while off site, graded by device class and school-local hours.

Hours are judged on the device's clock (the report's time; an event's `at`), so a summary
spooled overnight and delivered in the morning is still judged as night-time use.

The laptop agent sends a "site_state" event the moment its site state changes, so a state of
`off_site` opens the alert at once, worded with whether a user was logged in and active; the
summaries and heartbeats that follow carry `location = "offsite"` and add to the same alert
(one key per laptop). A `captive` state (a Wi-Fi sign-in page: the agent forwards to that
network's resolvers, still filtering, for at most 10 minutes) is no alert of its own: it is
stored, and said in the open off-site alert's sentence.
"""

from __future__ import annotations

from typing import Any

from common.wire.header import Kind
from hub.alerts import Finding, find_open, report_finding
from hub.model import StoredReport
from hub.rules.hours import minute_of_day
from hub.rules.settings import OffsiteRule, RulesConfig
from hub.rules.wording import clock, device_label, event_time
from hub.store import Database

RULE = "offsite_use"
KEY = "offsite"
EVENT = "site_state"
OFF_SITE = "off_site"
CAPTIVE = "captive"
_CAPTIVE_SENTENCE = " It then met a captive portal"  # how a captive note starts: said once


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


def _detail(payload: dict[str, Any]) -> dict[str, Any]:
    detail = payload.get("detail")
    return detail if isinstance(detail, dict) else {}


def _user(detail: dict[str, Any]) -> str:
    """Whether someone was using the laptop: what makes off-site use worth a look."""
    logged_in, active = detail.get("user_logged_in"), detail.get("user_active")
    if logged_in is True:
        return "a user was logged in and active" if active is True else "a user was logged in"
    if logged_in is False:
        return "no user was logged in"
    return "the laptop did not say whether a user was logged in"


def check(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """A finding if a summary or heartbeat says the laptop is off site, or a "site_state"
    event says it went off site (or met a captive portal while an alert is open)."""
    if not rules.offsite.enabled:
        return []
    if report.kind == Kind.EVENT and report.payload.get("type") == EVENT:
        state = _detail(report.payload).get("state")
        if state == OFF_SITE:
            return _went_off_site(rules, report)
        if state == CAPTIVE:
            return _captive(db, rules, report)
        return []
    if report.kind not in (Kind.SUMMARY, Kind.HEARTBEAT):
        return []
    if report.payload.get("location") != "offsite":
        return []
    zone = rules.zone
    severity, why = grade(rules.offsite, report.device_class, minute_of_day(report.time_ms, zone))
    if severity == 0:
        return []
    current = find_open(db, report.site, report.device, RULE, KEY)
    if current is not None and severity <= current.severity:
        # Keep the open alert's sentence (when it went off site, who was using it, a portal):
        # this report only says the use goes on, which its count and last_seen show.
        return [_finding(report, severity, current.summary)]
    label = device_label(report.site, report.device, report.device_class)
    summary = f"{label} was used off site at {clock(report.time_ms, zone)} (school time)"
    summary += f", {why}." if why else "."
    return [_finding(report, severity, summary)]


def _went_off_site(rules: RulesConfig, report: StoredReport) -> list[Finding]:
    zone = rules.zone
    at = event_time(report)
    severity, why = grade(rules.offsite, report.device_class, minute_of_day(at, zone))
    if severity == 0:
        return []
    detail = _detail(report.payload)
    label = device_label(report.site, report.device, report.device_class)
    summary = f"{label} went off site at {clock(at, zone)} (school time)"
    summary += f", {why}" if why else ""
    summary += f"; {_user(detail)}"
    if detail.get("previous") == CAPTIVE:
        summary += " (it had been behind a captive portal, a Wi-Fi sign-in page)"
    return [_finding(report, severity, summary + ".")]


def _captive(db: Database, rules: RulesConfig, report: StoredReport) -> list[Finding]:
    """The open off-site alert, its sentence saying the portal; nothing if none is open."""
    current = find_open(db, report.site, report.device, RULE, KEY)
    if current is None:
        return []
    at = clock(event_time(report), rules.zone)
    before = current.summary.split(_CAPTIVE_SENTENCE)[0]
    summary = (
        f"{before}{_CAPTIVE_SENTENCE} (a Wi-Fi sign-in page) at {at} (school time): for at "
        "most 10 minutes it forwards, still filtered, to that network's resolvers."
    )
    # The alert's severity, so that the sentence is kept; count 0: not another sighting.
    return [_finding(report, current.severity, summary, count=0)]


def _finding(report: StoredReport, severity: int, summary: str, count: int = 1) -> Finding:
    return report_finding(
        report,
        rule=RULE,
        severity=severity,
        group=report.group,
        key=KEY,
        summary=summary,
        count=count,
    )
