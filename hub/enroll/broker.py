"""The broker's per-device accounts: a Mosquitto password file and a pattern-based ACL.

Password hashes use Mosquitto's own PBKDF2-SHA512 format, as `mosquitto_passwd` writes them:
    user:$7$<iterations>$<base64 12-byte salt>$<base64 64-byte hash>
The hub stores each device's hash in devices.mqtt_secret_hash and rewrites both files from the
database after every enrolment or revocation; Mosquitto rereads them on SIGHUP. Either the
systemd path unit in firmware-config/mosquitto/ reloads it when the files change, or the hub
runs [enroll] broker_reload after each rewrite (hub.enroll.reload; docs/enrolment.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from common.enrolment import ENROLL_PASSWORD, ENROLL_USER
from common.wire.keyfile import PRIVATE_MODE, write_atomic
from hub.config import HubConfig
from hub.enroll.reload import ReloadOutcome, run_reload
from hub.enroll.settings import load_enroll_settings
from hub.errors import HubError
from hub.store import Database

log = logging.getLogger(__name__)

ITERATIONS = 101  # mosquitto_passwd's default; device passwords are 192 random bits anyway
SALT_LEN = 12

ACL_TEMPLATE = """\
# Mosquitto ACL for Hedgerow, written by hedgerow-hub: do not edit (docs/enrolment.md).
# Devices log in with their device id as user name (unique across sites); %u stands for it.
{site_patterns}
# Devices not yet enrolled: send a sealed request, read the (sealed) replies and the hub keys.
user {enroll_user}
topic write hedgerow/v1/enroll/+/request
topic read hedgerow/v1/enroll/+/reply
topic read hedgerow/v1/hub/keys

# The hub reads every report and request, and writes policies, keys and replies.
user {hub_user}
topic readwrite hedgerow/v1/#
"""

SITE_PATTERNS = """\
# site {site}: write own reports, read own policy, the site policy and the hub keys
pattern write hedgerow/v1/{site}/%u/summary
pattern write hedgerow/v1/{site}/%u/event
pattern write hedgerow/v1/{site}/%u/heartbeat
pattern read hedgerow/v1/{site}/%u/policy
pattern read hedgerow/v1/{site}/policy
"""


def new_password() -> str:
    """A random MQTT password (192 bits, URL-safe text)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto's `$7$` PBKDF2-SHA512 hash of a password."""
    salt = os.urandom(SALT_LEN) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if `password` matches a `$7$` hash (ours or mosquitto_passwd's)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the password file and ACL were written, and how broker_reload went (None when
    [enroll] broker_reload is not set)."""

    passwd: Path
    acl: Path
    users: int
    reload: ReloadOutcome | None = None


def render_acl(sites: list[str], *, hub_user: str, enroll_user: str = ENROLL_USER) -> str:
    """The ACL text for these sites."""
    patterns = "\n".join(SITE_PATTERNS.format(site=site) for site in sorted(set(sites)))
    return ACL_TEMPLATE.format(site_patterns=patterns, enroll_user=enroll_user, hub_user=hub_user)


def render_passwd(entries: list[tuple[str, str]]) -> str:
    """user:hash lines; user names must not contain ':' or line breaks."""
    lines = []
    for user, hashed in entries:
        if ":" in user or "\n" in user or "\n" in hashed:
            raise HubError(f"MQTT user {user!r} cannot go in a password file")
        lines.append(f"{user}:{hashed}")
    return "\n".join(lines) + "\n"


def _hub_entry(config: HubConfig, hub_user: str) -> tuple[str, str] | None:
    if config.mqtt.password_file is None:
        log.warning("no [mqtt] password_file: the hub has no broker account in the password file")
        return None
    try:
        password = config.mqtt.password_file.read_text("utf-8").strip()
    except OSError as exc:
        raise HubError(f"{config.mqtt.password_file}: cannot read: {exc.strerror}") from exc
    return hub_user, hash_password(password)


def write_broker_files(
    db: Database, config: HubConfig, directory: Path | None = None
) -> BrokerFiles:
    """Rewrite the password file and ACL from the database (revoked devices are left out),
    then run [enroll] broker_reload if set. A failed reload is logged and returned, not
    raised: the files are right, and Mosquitto reads them at its next reload."""
    settings = load_enroll_settings(config)
    directory = Path(directory or settings.broker_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    rows = db.execute(
        "SELECT mqtt_user, mqtt_secret_hash FROM devices WHERE revoked_ms IS NULL "
        "AND mqtt_user IS NOT NULL AND mqtt_secret_hash IS NOT NULL ORDER BY mqtt_user"
    )
    entries = [(ENROLL_USER, hash_password(ENROLL_PASSWORD))]
    hub = _hub_entry(config, settings.hub_user)
    if hub is not None:
        entries.append(hub)
    entries += [(str(u), str(h)) for u, h in rows]
    sites = [str(r[0]) for r in db.execute("SELECT site FROM sites UNION SELECT site FROM devices")]
    passwd = directory / "passwd"
    acl = directory / "acl"
    write_atomic(passwd, render_passwd(entries).encode("utf-8"), PRIVATE_MODE)
    acl_text = render_acl([config.site, *sites], hub_user=settings.hub_user)
    write_atomic(acl, acl_text.encode("utf-8"), PRIVATE_MODE)
    log.info("wrote broker accounts (%d users) to %s", len(entries), directory)
    reload = None
    if settings.broker_reload is not None:
        reload = run_reload(settings.broker_reload, settings.broker_reload_timeout_s)
    return BrokerFiles(passwd, acl, len(entries), reload)
