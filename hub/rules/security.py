"""security: bursts of forged, replayed or unknown-device envelopes.

Counted from the rejections table, so the caller records the rejection row before calling
RuleEngine.on_rejection. A burst claiming one device alerts on that device; a burst spread over
a site alerts on the site with device "-"; one spread over sites (or with no site) on "-"/"-".
"""

from __future__ import annotations

from hub.alerts import Finding
from hub.rules.settings import RulesConfig
from hub.store import Database

RULE = "security"
KEY = "rejections"
MINUTE_MS = 60_000
UNKNOWN = "-"
_WORDS = {
    "bad_signature": "with a bad signature",
    "decrypt_failed": "that could not be decrypted",
    "replay": "replayed",
    "unknown_device": "from an unknown device",
    "revoked": "from a revoked device",
    "wrong_key": "sealed to an unknown hub key",
}


def _breakdown(
    db: Database,
    reasons: tuple[str, ...],
    since_ms: int,
    now_ms: int,
    scope: str,
    params: tuple[str, ...],
) -> list[tuple[str, int]]:
    marks = ", ".join("?" for _ in reasons)
    rows = db.execute(
        f"SELECT reason, COUNT(*) FROM rejections WHERE at_ms > ? AND at_ms <= ? "
        f"AND reason IN ({marks}){scope} GROUP BY reason ORDER BY reason",
        (since_ms, now_ms, *reasons, *params),
    )
    return [(str(reason), int(n)) for reason, n in rows]


def check(
    db: Database, rules: RulesConfig, reason: str, site: str | None, device: str | None, now_ms: int
) -> list[Finding]:
    """A finding if this rejection completes a burst of N in M minutes (device, site, overall)."""
    rule = rules.security
    if not rule.enabled or rule.severity == 0 or reason not in rule.reasons:
        return []
    since_ms = now_ms - rule.minutes * MINUTE_MS
    scopes: list[tuple[str, str, str, tuple[str, ...]]] = []  # (site, device, where, params)
    if site is not None and device is not None:
        scopes.append((site, device, " AND site = ? AND device = ?", (site, device)))
    if site is not None:
        scopes.append((site, UNKNOWN, " AND site = ?", (site,)))
    scopes.append((UNKNOWN, UNKNOWN, "", ()))
    for alert_site, alert_device, where, params in scopes:
        counts = _breakdown(db, rule.reasons, since_ms, now_ms, where, params)
        total = sum(n for _, n in counts)
        if total < rule.attempts:
            continue
        parts = ", ".join(f"{n} {_WORDS.get(r, r)}" for r, n in counts)
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
