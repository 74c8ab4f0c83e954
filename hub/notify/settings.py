"""[notify], [notify.smtp] and [contacts.<id>] in hub.toml, read strictly.

[notify]
from = "hedgerow@school.example"
base_url = "https://hub.school"   # alert links: <base_url>/alerts/<id>
immediate_severity = 4            # at or above: emailed at once; below: daily digest
digest_hour_utc = 7
max_attempts = 12                 # then status "failed" (logged as an error, listed by the CLI)
retry_base_s = 60                 # backoff doubles from here ...
retry_max_s = 3600                # ... up to here

[notify.smtp]
host = "smtp.school.example"
port = 587
starttls = true
username = "hedgerow"
password_file = "smtp-password"   # relative to hub.toml
ca_file = "smtp-ca.pem"           # optional: a private CA for STARTTLS
timeout_s = 30

[contacts.dsl]
name = "Designated Safeguarding Lead"
email = "dsl@school.example"
webhook = "https://safeguarding.example/hook"   # optional; https, or http on loopback
min_severity = 3
sites = ["cape-primary"]          # optional; default every site
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.tomlconfig import Section
from common.wire.header import valid_name
from hub.config import HubConfig

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the mail server."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    timeout_s: int = 30


@dataclass(frozen=True, slots=True)
class Contact:
    """Someone (or some system) told about alerts at or above a severity."""

    id: str
    name: str
    email: str | None
    webhook: str | None
    min_severity: int
    sites: tuple[str, ...] = ()

    def wants(self, site: str, severity: int) -> bool:
        """True if this contact is told about an alert of this site and severity."""
        return severity >= self.min_severity and (not self.sites or site in self.sites)


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """Everything notifications need."""

    sender: str = "hedgerow@localhost"
    base_url: str = "http://127.0.0.1:8080"
    immediate_severity: int = 4
    digest_hour_utc: int = 7
    max_attempts: int = 12
    retry_base_s: int = 60
    retry_max_s: int = 3600
    smtp: SmtpSettings | None = None
    contacts: tuple[Contact, ...] = ()

    def contact(self, contact_id: str) -> Contact | None:
        """The contact with this id (None if it was removed from hub.toml since)."""
        return next((c for c in self.contacts if c.id == contact_id), None)


def _webhook(value: str) -> str | None:
    url = urlparse(value)
    if url.scheme == "https" and url.hostname:
        return None
    if url.scheme == "http" and url.hostname in LOOPBACK:
        return None
    return "must be https://... (plain http only on loopback)"


def _email(value: str) -> str | None:
    local, at, domain = value.partition("@")
    ok = at and local and domain and not any(c in value for c in " \r\n<>,") and "@" not in domain
    return None if ok else "must be one address such as dsl@school.example"


def _file(raw: str | None, base: Path) -> Path | None:
    return None if raw is None else (base / raw).resolve()


def _smtp(table: object, source: str, base: Path) -> SmtpSettings:
    sec = Section("notify.smtp", table, source)
    smtp = SmtpSettings(
        host=sec.text("host"),
        port=sec.integer("port", 587, lo=1, hi=65535),
        starttls=sec.flag("starttls", True),
        username=sec.optional_text("username"),
        password_file=_file(sec.optional_text("password_file"), base),
        ca_file=_file(sec.optional_text("ca_file"), base),
        timeout_s=sec.integer("timeout_s", 30, lo=1, hi=600),
    )
    sec.done()
    if smtp.username is not None and smtp.password_file is None:
        sec.fail("password_file", None, "is required when username is set")
    if smtp.username is not None and not smtp.starttls:
        sec.fail(
            "starttls",
            False,
            "must be true when username is set: the password would cross the network in clear",
        )
    return smtp


def _contact(contact_id: str, table: object, source: str) -> Contact:
    sec = Section(f"contacts.{contact_id}", table, source)
    if not valid_name(contact_id):
        sec.fail("", contact_id, "contact ids must be 1-63 chars of [a-z0-9._-]")
    contact = Contact(
        id=contact_id,
        name=sec.text("name", contact_id),
        email=sec.optional_text("email", check=_email),
        webhook=sec.optional_text("webhook", check=_webhook),
        min_severity=sec.integer("min_severity", 3, lo=1, hi=5),
        sites=tuple(sec.text_list("sites", [])),
    )
    sec.done()
    if contact.email is None and contact.webhook is None:
        sec.fail("email", None, "a contact needs an email or a webhook")
    return contact


def load_notify_settings(config: HubConfig) -> NotifySettings:
    """Read [notify] and [contacts]; raises ConfigError naming section, key, value and rule."""
    source = str(config.path)
    base = config.path.parent
    sec = config.section("notify")
    raw_smtp = sec.optional_table("smtp")
    settings = NotifySettings(
        sender=sec.text("from", "hedgerow@localhost", check=_email),
        base_url=sec.text("base_url", f"http://{config.web_listen}").rstrip("/"),
        immediate_severity=sec.integer("immediate_severity", 4, lo=1, hi=5),
        digest_hour_utc=sec.integer("digest_hour_utc", 7, lo=0, hi=23),
        max_attempts=sec.integer("max_attempts", 12, lo=1, hi=1000),
        retry_base_s=sec.integer("retry_base_s", 60, lo=1, hi=86400),
        retry_max_s=sec.integer("retry_max_s", 3600, lo=1, hi=7 * 86400),
        smtp=None if raw_smtp is None else _smtp(raw_smtp, source, base),
        contacts=tuple(
            _contact(cid, table, source)
            for cid, table in sorted(config.table("contacts").items())
        ),
    )
    sec.done()
    if settings.smtp is None and any(c.email for c in settings.contacts):
        sec.fail("smtp", None, "is required when a contact has an email address")
    return settings
