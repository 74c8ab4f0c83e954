"""[enroll] in hub.toml: rate limits and where the broker's password file and ACL are written.

[enroll]
rate_per_minute = 10        # enrolment requests answered per minute, all sites together
site_rate_per_minute = 10   # ... and per site
broker_dir = "mosquitto"    # DATA/mosquitto/passwd and acl (relative to the data directory)
hub_user = "hedgerow-hub"   # the hub's broker account (its password: [mqtt] password_file)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.tomlreader import Section
from agent.wire.header import valid_name
from hub.config import HubConfig


@dataclass(frozen=True, slots=True)
class EnrollSettings:
    """How enrolment behaves."""

    rate_per_minute: int = 10
    site_rate_per_minute: int = 10
    broker_dir: Path = Path("mosquitto")
    hub_user: str = "hedgerow-hub"


def load_enroll_settings(config: HubConfig) -> EnrollSettings:
    """Read [enroll] strictly (defaults when absent)."""
    sec = Section("enroll", config.extra.get("enroll", {}), str(config.path))
    rate = sec.integer("rate_per_minute", 10, lo=1, hi=10_000)
    site_rate = sec.integer("site_rate_per_minute", 10, lo=1, hi=10_000)
    broker_dir = config.data / sec.text("broker_dir", "mosquitto")
    hub_user = sec.text(
        "hub_user",
        config.mqtt.username or "hedgerow-hub",
        check=lambda v: None if valid_name(v) else "must be 1-63 chars of [a-z0-9._-]",
    )
    sec.done()
    return EnrollSettings(rate, site_rate, broker_dir, hub_user)
