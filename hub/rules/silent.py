"""silent_device: nothing heard from a device for too long (laptops: days; the Pi: minutes).

The alert closes itself, with a "resolved" action, as soon as the device is heard again.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.alerts import Finding, find_active, resolve
from hub.model import StoredReport
from hub.rules.settings import RulesConfig, SilentRule
from hub.rules.wording import device_label, when
from hub.store import Database
from hub.store.devices import devices_where

RULE = "silent_device"
KEY = "silent"
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS


def limit_ms(rule: SilentRule, device_class: str) -> tuple[int, int]:
    """(silence allowed in ms, severity) for a class of device."""
    if device_class == "sinkhole":
        return rule.sinkhole_minutes * MINUTE_MS, rule.sinkhole_severity
    return rule.laptop_days * DAY_MS, rule.laptop_severity


def _silence(ms: int) -> str:
    if ms >= DAY_MS:
        days = ms // DAY_MS
        return f"{days} day{'s' if days != 1 else ''}"
    if ms >= 60 * MINUTE_MS:
        hours = ms // (60 * MINUTE_MS)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = ms // MINUTE_MS
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def tick(db: Database, rules: RulesConfig, now_ms: int) -> list[Finding]:
    """Findings for devices silent too long; resolves alerts of devices heard again."""
    rule = rules.silent
    shortest = min(rule.sinkhole_minutes * MINUTE_MS, rule.laptop_days * DAY_MS)
    rows = db.execute(
        "SELECT site, device, class, grp, COALESCE(last_seen_ms, enrolled_ms) FROM devices "
        "WHERE revoked_ms IS NULL AND COALESCE(last_seen_ms, enrolled_ms) < ?",
        (now_ms - shortest,),
    )
    silent = set()
    findings = []
    for site, device, device_class, group, seen_ms in rows:
        allowed, severity = limit_ms(rule, device_class)
        if now_ms - int(seen_ms) <= allowed:
            continue
        silent.add((site, device))
        if not rule.enabled or severity == 0 or find_active(db, site, device, RULE, KEY):
            continue
        label = device_label(site, device, device_class)
        findings.append(
            Finding(
                rule=RULE,
                severity=severity,
                site=site,
                device=device,
                device_class=device_class,
                group=group,
                key=KEY,
                summary=f"{label} has not been heard from for {_silence(now_ms - int(seen_ms))} "
                f"(last heard {when(int(seen_ms), rules.zone)} school time).",
                at_ms=now_ms,
            )
        )
    for alert_id, site, device in db.execute(
        "SELECT id, site, device FROM alerts WHERE rule = ? AND status IN ('open', 'acknowledged')",
        (RULE,),
    ):
        if (site, device) not in silent:
            resolve(db, int(alert_id), now_ms, "the device is reporting again")
    return findings


def heard(db: Database, reports: Sequence[StoredReport]) -> None:
    """Reports arrived: resolve their devices' open or acknowledged silent_device alerts (the
    latest of each device, as find_active picks it), each by the device's first report here.
    One statement per 400 devices."""
    first: dict[tuple[str, str], StoredReport] = {}
    for report in reports:
        first.setdefault((report.site, report.device), report)
    latest: dict[tuple[str, str], int] = {}
    for where, params in devices_where(first):
        for alert_id, site, device in db.execute(
            "SELECT id, site, device FROM alerts WHERE rule = ? AND dedup_key = ? "
            f"AND status IN ('open', 'acknowledged') AND {where}",
            (RULE, KEY, *params),
        ):
            key = (site, device)
            latest[key] = max(latest.get(key, 0), int(alert_id))
    for key, alert_id in sorted(latest.items()):
        report = first[key]
        resolve(db, alert_id, report.received_ms, f"heard again (report {report.id})")
