"""The broker's accounts: a Mosquitto password file and a pattern-based ACL.

Accounts: the hub (`hub_user`), the hub's commands (`<hub_user>-cli`, e.g. policy publish, so
that they never share the running hub's client id), one login per enrolment token that can still
be used (`enroll-<token id>`, made with the token) and one per enrolled device (its device id).
Mosquitto binds each connection's client id to its user name (use_username_as_clientid under
every listener, firmware-config/mosquitto/hedgerow.conf), so no login can take over another's
session.

The hub stores each hash in the database and rewrites both files from it after every
enrolment, token or revocation. Both files are checked line by line against what Mosquitto
accepts before they replace the old ones: Mosquitto 2.0 runs with no ACL at all if its ACL
file is broken. Then Mosquitto rereads them on SIGHUP: either the systemd path unit in
firmware-config/mosquitto/ reloads it when the files change, or the hub runs [enroll]
broker_reload after each rewrite (hub.enroll.reload; docs/enrolment.md). A failed reload
raises a `security` alert: the broker keeps enforcing its old accounts.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from common.wire.header import valid_name
from common.wire.keyfile import PRIVATE_MODE, write_atomic
from hub.config import HubConfig
from hub.enroll.passwords import hash_password
from hub.enroll.reload import ReloadOutcome, run_reload
from hub.enroll.settings import load_enroll_settings
from hub.enroll.tokens import token_logins
from hub.errors import HubError
from hub.hub_alerts import raise_hub_alert
from hub.store import Database

log = logging.getLogger(__name__)

CLI_SUFFIX = "-cli"

ACL_TEMPLATE = """\
# Mosquitto ACL for Hedgerow, written by hedgerow-hub: do not edit (docs/enrolment.md).
# Devices log in with their device id as user name (unique across sites); %u stands for it.
{site_patterns}
# Enrolment: each token's own login sends a sealed request and reads the (sealed) replies and
# the hub keys.
{token_users}
# The hub reads every report and request, and writes policies, keys, receipts and replies; its
# commands (policy publish) log in as the second account. The hub reads the broker's error log
# (log_dest topic) to notice a takeover of its session.
user {hub_user}
topic readwrite hedgerow/v1/#
topic read $SYS/broker/log/E

user {cli_user}
topic readwrite hedgerow/v1/#
"""

TOKEN_USER = """\
user {user}
topic write hedgerow/v1/enroll/+/request
topic read hedgerow/v1/enroll/+/reply
topic read hedgerow/v1/hub/keys
"""

SITE_PATTERNS = """\
# site {site}: write own reports, read own policy and receipts, the site policy and hub keys
pattern write hedgerow/v1/{site}/%u/summary
pattern write hedgerow/v1/{site}/%u/event
pattern write hedgerow/v1/{site}/%u/heartbeat
pattern read hedgerow/v1/{site}/%u/policy
pattern read hedgerow/v1/{site}/%u/receipt
pattern read hedgerow/v1/{site}/policy
pattern read hedgerow/v1/hub/keys
"""

# What the files may hold, line by line (the grammar Mosquitto reads, narrowed to ours).
_NAME = r"[a-z0-9._-]{1,63}"
_TOPIC = r"hedgerow/v1(/(?:[a-z0-9._-]{1,63}|\+|%u))*(/#)?"
_ACL_LINE = re.compile(
    rf"(#[^\x00-\x1f\x7f]*|user {_NAME}|(topic|pattern) (read|write|readwrite) {_TOPIC}"
    r"|topic read \$SYS/broker/log/E|)"
)
_PASSWD_LINE = re.compile(rf"{_NAME}:\$7\$\d{{1,7}}\$[A-Za-z0-9+/]{{16}}\$[A-Za-z0-9+/]{{86}}==")


def cli_user(hub_user: str) -> str:
    """The broker account of the hub's commands."""
    return hub_user + CLI_SUFFIX


def reserved_users(hub_user: str) -> tuple[str, ...]:
    """User names no device may have."""
    return (hub_user, cli_user(hub_user), "enroll")


def check_acl(text: str) -> None:
    """Raise HubError naming the first line Mosquitto would not read as we mean it."""
    for number, line in enumerate(text.split("\n"), 1):
        if not _ACL_LINE.fullmatch(line):
            raise HubError(f"ACL line {number} is not valid, refusing to install it: {line!r}")


def check_passwd(text: str) -> None:
    """Raise HubError naming the first password-file line that is not `user:$7$...`."""
    users: set[str] = set()
    if text and not text.endswith("\n"):
        raise HubError("password file: the last line has no line break, refusing it")
    for number, line in enumerate(text.split("\n")[:-1], 1):
        if not _PASSWD_LINE.fullmatch(line):
            shown = line.split(":", 1)[0]
            raise HubError(f"password file line {number} ({shown!r}) is not valid, refusing it")
        user = line.split(":", 1)[0]
        if user in users:
            raise HubError(f"password file: user {user!r} appears twice, refusing it")
        users.add(user)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the password file and ACL were written, and how broker_reload went (None when
    [enroll] broker_reload is not set)."""

    passwd: Path
    acl: Path
    users: int
    reload: ReloadOutcome | None = None


def render_acl(sites: list[str], *, hub_user: str, token_users: list[str] | None = None) -> str:
    """The ACL text for these sites and token logins (checked with check_acl)."""
    for name in [*sites, *(token_users or []), hub_user]:
        if not valid_name(name):
            raise HubError(f"{name!r} cannot go in the ACL: ids are 1-63 chars of [a-z0-9._-]")
    patterns = "\n".join(SITE_PATTERNS.format(site=site) for site in sorted(set(sites)))
    tokens = "\n".join(TOKEN_USER.format(user=u) for u in sorted(set(token_users or [])))
    text = ACL_TEMPLATE.format(
        site_patterns=patterns,
        token_users=tokens or "# (no token can enrol a device now)\n",
        hub_user=hub_user,
        cli_user=cli_user(hub_user),
    )
    check_acl(text)
    return text


def render_passwd(entries: list[tuple[str, str]]) -> str:
    """user:hash lines (checked with check_passwd)."""
    for user, _ in entries:
        if not valid_name(user):
            raise HubError(f"MQTT user {user!r} cannot go in a password file")
    text = "".join(f"{user}:{hashed}\n" for user, hashed in entries)
    check_passwd(text)
    return text


def _hub_entries(config: HubConfig, hub_user: str) -> list[tuple[str, str]]:
    if config.mqtt.password_file is None:
        log.warning("no [mqtt] password_file: the hub has no broker account in the password file")
        return []
    try:
        password = config.mqtt.password_file.read_text("utf-8").strip()
    except OSError as exc:
        raise HubError(f"{config.mqtt.password_file}: cannot read: {exc.strerror}") from exc
    return [(hub_user, hash_password(password)), (cli_user(hub_user), hash_password(password))]


def write_broker_files(
    db: Database, config: HubConfig, directory: Path | None = None, *, now_ms: int | None = None
) -> BrokerFiles:
    """Rewrite the password file and ACL from the database (revoked devices, and revoked or
    expired tokens, are left out), then run [enroll] broker_reload if set. Both files are
    checked before either replaces the old one (HubError otherwise, and nothing changes). A
    failed reload is logged, raises a `security` alert and is returned, not raised: the
    files are right, and Mosquitto reads them at its next reload."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    settings = load_enroll_settings(config)
    directory = Path(directory or settings.broker_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise HubError(f"cannot make the broker files' directory {directory}: {exc}") from exc
    rows = db.execute(
        "SELECT mqtt_user, mqtt_secret_hash FROM devices WHERE revoked_ms IS NULL "
        "AND mqtt_user IS NOT NULL AND mqtt_secret_hash IS NOT NULL ORDER BY mqtt_user"
    )
    tokens = token_logins(db, now)
    entries = _hub_entries(config, settings.hub_user) + tokens
    entries += [(str(u), str(h)) for u, h in rows]
    sites = [str(r[0]) for r in db.execute("SELECT site FROM sites UNION SELECT site FROM devices")]
    passwd_text = render_passwd(entries)
    acl_text = render_acl(
        [config.site, *sites], hub_user=settings.hub_user, token_users=[u for u, _ in tokens]
    )
    passwd = directory / "passwd"
    acl = directory / "acl"
    try:
        write_atomic(passwd, passwd_text.encode("utf-8"), PRIVATE_MODE)
        write_atomic(acl, acl_text.encode("utf-8"), PRIVATE_MODE)
    except OSError as exc:
        raise HubError(f"cannot write the broker files in {directory}: {exc}") from exc
    log.info("wrote broker accounts (%d users) to %s", len(entries), directory)
    reload = None
    if settings.broker_reload is not None:
        reload = run_reload(settings.broker_reload, settings.broker_reload_timeout_s)
        if not reload.ok:
            _reload_alert(db, config, reload, now)
    return BrokerFiles(passwd, acl, len(entries), reload)


def _reload_alert(db: Database, config: HubConfig, outcome: ReloadOutcome, now_ms: int) -> None:
    raise_hub_alert(
        db,
        config,
        device=load_enroll_settings(config).hub_user,
        key="broker_reload",
        summary=(
            "The broker did not reload its accounts and ACL: it still enforces the old ones "
            f"(new devices cannot connect; revoked ones still can). {outcome.describe()}"
        ),
        at_ms=now_ms,
    )
