"""security: bursts of forged, replayed or unknown-device envelopes, and of garbage on an
enrolled device's own topic.

Counted from the per-minute refusal counts (hub.store.rejections: one statement per call, over
a few rows per device and minute, never one row per refusal), so the caller records the batch's
refusals before calling RuleEngine.on_rejection. A burst claiming one device alerts on that
device; a burst spread over a site alerts on the site with device "-"; one spread over sites
(or with no site) on "-"/"-".

Malformed and oversized envelopes count too when they came on the topic of an enrolled device,
attributed to it: past the broker's ACL only that device (or whoever holds its broker password)
can publish there, so a burst of garbage there is an attack or a compromised device, not noise.
"""

from __future__ import annotations

from common.wire.errors import Reason
from hub.alerts import Finding
from hub.rules.settings import RulesConfig
from hub.store import Database
from hub.store.rejections import refusals_in_window

RULE = "security"
KEY = "rejections"
MINUTE_MS = 60_000
UNKNOWN = "-"
# Counted whatever [rules.security] reasons says, when the topic names an enrolled device.
ENROLLED_REASONS = (Reason.MALFORMED.value, Reason.TOO_LARGE.value)
_WORDS = {
    "bad_signature": "with a bad signature",
    "decrypt_failed": "that could not be decrypted",
    "replay": "replayed",
    "unknown_device": "from an unknown device",
    "revoked": "from a revoked device",
    "wrong_key": "sealed to an unknown hub key",
    "malformed": "malformed",
    "too_large": "oversized",
}


def check(
    db: Database, rules: RulesConfig, reason: str, site: str | None, device: str | None, now_ms: int
) -> list[Finding]:
    """A finding if this rejection completes a burst of N in M minutes (device, site, overall)."""
    rule = rules.security
    counted = reason in rule.reasons or (reason in ENROLLED_REASONS and device is not None)
    if not rule.enabled or rule.severity == 0 or not counted:
        return []
    extra = tuple(r for r in ENROLLED_REASONS if r not in rule.reasons)
    rows = refusals_in_window(db, rule.reasons, extra, now_ms - rule.minutes * MINUTE_MS, now_ms)
    scopes: list[tuple[str, str]] = []  # (alert site, alert device), narrowest first
    if site is not None and device is not None:
        scopes.append((site, device))
    if site is not None:
        scopes.append((site, UNKNOWN))
    scopes.append((UNKNOWN, UNKNOWN))
    for alert_site, alert_device in scopes:
        by_reason: dict[str, int] = {}
        for row_site, row_device, row_reason, n in rows:
            if alert_site != UNKNOWN and row_site != alert_site:
                continue
            if alert_device != UNKNOWN and row_device != alert_device:
                continue
            by_reason[row_reason] = by_reason.get(row_reason, 0) + n
        total = sum(by_reason.values())
        if total < rule.attempts:
            continue
        parts = ", ".join(f"{n} {_WORDS.get(r, r)}" for r, n in sorted(by_reason.items()))
        target = (
            f"claiming to be {alert_site}/{alert_device}"
            if alert_device != UNKNOWN
            else (f"for site {alert_site}" if alert_site != UNKNOWN else "across all sites")
        )
        return [
            Finding(
                rule=RULE,
                severity=rule.severity,
                site=alert_site,
                device=alert_device,
                device_class=None,
                group=None,
                key=KEY,
                summary=f"The hub refused {total} messages {target} in {rule.minutes} minutes "
                f"({parts}): someone may be forging or replaying messages.",
                at_ms=now_ms,
            )
        ]
    return []
