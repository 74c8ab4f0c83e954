"""[enroll] in hub.toml: rate limits, where the broker's password file and ACL are written, and
how Mosquitto is told to reread them.

[enroll]
rate_per_minute = 600       # enrolment requests answered per minute, all sites together
site_rate_per_minute = 30   # ... and per site (the device is told to retry)
broker_dir = "mosquitto"    # DATA/mosquitto/passwd and acl (relative to the data directory)
hub_user = "hedgerow-hub"   # the hub's broker account (its password: [mqtt] password_file)
broker_reload = ["systemctl", "reload", "mosquitto"]  # default: unset (a systemd path unit)
broker_reload_timeout_s = 10
device_broker_url = "mqtts://hub.school.example:8883"  # what devices connect to (printed in
                            # enrolment commands and written into bundles); default: unset
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.tomlconfig import Section
from common.wire.header import valid_name
from hub.config import HubConfig

RELOAD_EXAMPLE = '["systemctl", "reload", "mosquitto"]'


@dataclass(frozen=True, slots=True)
class EnrollSettings:
    """How enrolment behaves."""

    rate_per_minute: int = 600
    site_rate_per_minute: int = 30
    broker_dir: Path = Path("mosquitto")
    hub_user: str = "hedgerow-hub"
    broker_reload: tuple[str, ...] | None = None  # argv run after each rewrite; None: not run
    broker_reload_timeout_s: int = 10
    device_broker_url: str | None = None


def load_enroll_settings(config: HubConfig, *, find_program: bool = False) -> EnrollSettings:
    """Read [enroll] strictly (defaults when absent). With `find_program` (hedgerow-hub
    check), broker_reload's program must also exist now; serve and the commands only report
    a missing program when they run it, so an enrolment never fails for it."""
    sec = config.section("enroll")
    rate = sec.integer("rate_per_minute", 600, lo=1, hi=10_000)
    site_rate = sec.integer("site_rate_per_minute", 30, lo=1, hi=10_000)
    broker_dir = config.data / sec.text("broker_dir", "mosquitto")
    hub_user = sec.text(
        "hub_user",
        config.mqtt.username or "hedgerow-hub",
        check=lambda v: None if valid_name(v) else "must be 1-63 chars of [a-z0-9._-]",
    )
    reload = _reload_command(sec, find_program)
    timeout = sec.integer("broker_reload_timeout_s", 10, lo=1, hi=300)
    device_url = sec.optional_text("device_broker_url", check=_device_url)
    sec.done()
    return EnrollSettings(rate, site_rate, broker_dir, hub_user, reload, timeout, device_url)


def _device_url(value: str) -> str | None:
    url = urlparse(value)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname or url.path not in ("", "/"):
        return "must be mqtts://host:port (or mqtt://host:port on a trusted network)"
    return None


def _reload_command(sec: Section, find_program: bool) -> tuple[str, ...] | None:
    key = "broker_reload"
    argv = sec.optional_text_list(
        key, rule=f"must be an argv list such as {RELOAD_EXAMPLE}, never a shell string"
    )
    if argv is None:
        return None
    if not argv or not argv[0]:
        sec.fail(key, argv, f"must name a program first, e.g. {RELOAD_EXAMPLE}")
    if any("\0" in arg for arg in argv):
        sec.fail(key, argv, "must not contain NUL characters")
    program = argv[0]
    if len(argv) == 1 and any(c.isspace() for c in program):
        sec.fail(
            key,
            argv,
            f"is run without a shell: give the program and each argument as its own item, "
            f"e.g. {RELOAD_EXAMPLE}",
        )
    if "/" in program and not program.startswith("/"):
        sec.fail(key, argv, "the program must be a name found on PATH or an absolute path")
    if find_program and shutil.which(program) is None:
        sec.fail(key, argv, f"program {program!r} is not found or not executable")
    return tuple(argv)


PLACEHOLDER_URL = "mqtts://HUB-ADDRESS:8883"  # shown when [enroll] device_broker_url is unset


def enrol_command(config: HubConfig, site: str, device_class: str, token: str) -> str:
    """The command a technician runs on the device, with every argument it needs (the CLI's
    `enroll-token create` and the dashboard's token page both show it)."""
    url = load_enroll_settings(config).device_broker_url
    program = "hedgerow-dns enroll --config /etc/hedgerow/hedgerow-dns.toml"
    if device_class != "sinkhole":
        program = "hedgerow-agent enroll"
    command = f"sudo {program} --site {site} --broker {url or PLACEHOLDER_URL} --token {token}"
    if url is None or url.startswith("mqtts:"):
        command += " --ca /etc/hedgerow/ca.pem"
    return command
