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

[escalation]                      # severe alerts: one contact at a time until a person acts
chain = ["dsl", "deputy_dsl", "head"]
out_of_hours_chain = ["dsl_on_call", "head"]   # optional; default the chain
ack_minutes = 15                  # or ack_seconds (tests and drills)
min_severity = 4
school_hours = "08:00-17:00"
school_days = "Mon-Fri"
timezone = "Europe/London"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from common.tomlconfig import Section
from common.wire.header import valid_name
from hub.config import HubConfig
from hub.notify.hours import SchoolHours, parse_days, parse_hours, zone_problem

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
class EscalationSettings:
    """[escalation]: who is told of a severe alert, one after another, until a person acts."""

    chain: tuple[str, ...]
    out_of_hours_chain: tuple[str, ...]
    ack_ms: int = 15 * 60_000
    min_severity: int = 4
    hours: SchoolHours = field(default_factory=SchoolHours)

    def chain_at(self, at_ms: int) -> tuple[str, tuple[str, ...]]:
        """The chain in force at `at_ms` and its name ("school hours" or "out of hours")."""
        if self.hours.contains(at_ms):
            return "school hours", self.chain
        return "out of hours", self.out_of_hours_chain

    @property
    def members(self) -> frozenset[str]:
        """Every contact in either chain: the chain, not their min_severity, decides when they
        hear of alerts at or above min_severity."""
        return frozenset(self.chain + self.out_of_hours_chain)

    @property
    def waited(self) -> str:
        """How long the chain waits for a person, in words: "15 min", "5 s"."""
        if self.ack_ms % 60_000 == 0:
            return f"{self.ack_ms // 60_000} min"
        return f"{self.ack_ms / 1000:g} s"


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
    escalation: EscalationSettings | None = None

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


def _chain(
    sec: Section, key: str, contacts: tuple[Contact, ...], default: list[str] | None
) -> tuple[str, ...]:
    known = {c.id for c in contacts}
    ids = sec.text_list(key) if default is None else sec.text_list(key, default)
    if not ids:
        sec.fail(key, ids, "must name at least one contact")
    for contact_id in ids:
        if contact_id not in known:
            sec.fail(key, ids, f"{contact_id!r} is not a [contacts.{contact_id}] table")
    if len(set(ids)) != len(ids):
        sec.fail(key, ids, "names a contact twice")
    return tuple(ids)


def _rule(parse: Callable[[str], object]) -> Callable[[str], str | None]:
    """A Section check from a parser that returns the rule broken as a string."""
    return lambda value: problem if isinstance(problem := parse(value), str) else None


def _escalation(table: object, source: str, contacts: tuple[Contact, ...]) -> EscalationSettings:
    sec = Section("escalation", table, source)
    chain = _chain(sec, "chain", contacts, None)
    night = _chain(sec, "out_of_hours_chain", contacts, list(chain))
    minutes = sec.optional_integer("ack_minutes", lo=1, hi=24 * 60)
    seconds = sec.optional_integer("ack_seconds", lo=1, hi=86400)
    if minutes is not None and seconds is not None:
        sec.fail("ack_seconds", seconds, "set ack_minutes or ack_seconds, not both")
    hours = parse_hours(sec.text("school_hours", "08:00-17:00", check=_rule(parse_hours)))
    days = parse_days(sec.text("school_days", "Mon-Fri", check=_rule(parse_days)))
    assert not isinstance(hours, str) and not isinstance(days, str)  # checked just above
    settings = EscalationSettings(
        chain=chain,
        out_of_hours_chain=night,
        ack_ms=seconds * 1000 if seconds is not None else (minutes or 15) * 60_000,
        min_severity=sec.integer("min_severity", 4, lo=1, hi=5),
        hours=SchoolHours(
            hours[0], hours[1], days, sec.text("timezone", "Europe/London", check=zone_problem)
        ),
    )
    sec.done()
    return settings


def _base_url(config: HubConfig) -> str:
    """Where alert links point unless [notify] base_url says: [web] base_url, else the
    dashboard's listen address."""
    if config.web.base_url:
        return config.web.base_url
    scheme = "https" if config.web.tls else "http"
    return f"{scheme}://{config.web_listen or '127.0.0.1:8080'}"


def load_notify_settings(config: HubConfig) -> NotifySettings:
    """Read [notify] and [contacts]; raises ConfigError naming section, key, value and rule."""
    source = str(config.path)
    base = config.path.parent
    sec = config.section("notify")
    raw_smtp = sec.optional_table("smtp")
    settings = NotifySettings(
        sender=sec.text("from", "hedgerow@localhost", check=_email),
        base_url=sec.text("base_url", _base_url(config)).rstrip("/"),
        immediate_severity=sec.integer("immediate_severity", 4, lo=1, hi=5),
        digest_hour_utc=sec.integer("digest_hour_utc", 7, lo=0, hi=23),
        max_attempts=sec.integer("max_attempts", 12, lo=1, hi=1000),
        retry_base_s=sec.integer("retry_base_s", 60, lo=1, hi=86400),
        retry_max_s=sec.integer("retry_max_s", 3600, lo=1, hi=7 * 86400),
        smtp=None if raw_smtp is None else _smtp(raw_smtp, source, base),
        contacts=tuple(
            _contact(cid, table, source) for cid, table in sorted(config.table("contacts").items())
        ),
    )
    sec.done()
    if "escalation" in config.extra:
        settings = replace(
            settings, escalation=_escalation(config.extra["escalation"], source, settings.contacts)
        )
    if settings.smtp is None and any(c.email for c in settings.contacts):
        sec.fail("smtp", None, "is required when a contact has an email address")
    return settings
