"""Email: the wording of alert and digest messages, and one SMTP send (STARTTLS, login).

Subjects never carry a pupil, device, site or domain name: a subject shows on lock screens and
in mail server logs. The body may, and links to the alert on the hub.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from common.text import printable
from hub.errors import HubError
from hub.model import Alert
from hub.notify.settings import Contact, NotifySettings, SmtpSettings

SEVERITY_WORDS = {
    1: "information",
    2: "low",
    3: "medium",
    4: "high",
    5: "a child may be at risk now",
}


class SendError(HubError):
    """A notification could not be delivered this time (it will be retried)."""


def rule_label(rule: str) -> str:
    """A rule id as words for a subject: letters and digits only, e.g. 'blocked content'."""
    return re.sub(r"[^a-z0-9]+", " ", rule.lower()).strip()[:40] or "alert"


def alert_link(settings: NotifySettings, alert_id: int) -> str:
    """Where the alert lives on the hub's dashboard."""
    return f"{settings.base_url}/alerts/{alert_id}"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _message(settings: NotifySettings, contact: Contact, subject: str, body: str) -> EmailMessage:
    assert contact.email is not None
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = contact.email
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=settings.sender.partition("@")[2] or None)
    # Names and summaries carry what a pupil typed: no control or bidi character reaches a
    # mail reader as it was (common.text).
    message.set_content("\n".join(printable(line) for line in body.split("\n")))
    return message


def alert_email(
    settings: NotifySettings,
    contact: Contact,
    alert: Alert,
    told_before: tuple[str, ...] = (),
    escalated_by: str | None = None,
) -> EmailMessage:
    """The email sent at once for a severe alert; `told_before` names the contacts the
    escalation chain told first, when it tells this one because none of them acted;
    `escalated_by` the dashboard user who escalated it to the DSL."""
    subject = f"Hedgerow alert: severity {alert.severity} ({rule_label(alert.rule)})"
    chain: list[str] = []
    if escalated_by is not None:
        subject += ", escalated to the DSL"
        chain = [
            f"{escalated_by} escalated this alert to the DSL on the hub: the reason is in the "
            "alert's trail. Acknowledge it on the hub when you are dealing with it.",
            "",
        ]
    elif told_before:
        subject += ", not acknowledged"
        esc = settings.escalation
        waited = f" within {esc.waited}" if esc is not None else ""
        chain = [
            f"Nobody acted on this alert{waited} of telling {', '.join(told_before)}: you are "
            "next in the escalation chain. Acknowledge it on the hub if you are dealing with it.",
            "",
        ]
    body = "\n".join(
        [
            *chain,
            f"Hedgerow raised an alert of severity {alert.severity} "
            f"({SEVERITY_WORDS.get(alert.severity, '')}).",
            "",
            alert.summary,
            "",
            f"Site: {alert.site}",
            f"Device: {alert.device}" + (f" ({alert.device_class})" if alert.device_class else ""),
            f"Seen: {alert.count} time(s), first {_when(alert.first_seen_ms)}, "
            f"last {_when(alert.last_seen_ms)}",
            f"Status: {alert.status}",
            "",
            f"Open the alert: {alert_link(settings, alert.id)}",
            "",
            f"You receive this as the DSL contact ({contact.name}) of Hedgerow."
            if escalated_by is not None
            else f"You receive this as the next contact ({contact.name}) of Hedgerow's escalation chain."
            if told_before
            else f"You receive this as a Hedgerow contact ({contact.name}) for alerts of "
            f"severity {contact.min_severity} and above.",
        ]
    )
    return _message(settings, contact, subject, body)


def digest_email(settings: NotifySettings, contact: Contact, alerts: list[Alert]) -> EmailMessage:
    """One email listing the day's less severe alerts."""
    subject = f"Hedgerow daily digest: {len(alerts)} alert(s)"
    lines = [f"Alerts below severity {settings.immediate_severity} since the last digest:", ""]
    for alert in sorted(alerts, key=lambda a: (-a.severity, a.id)):
        lines += [
            f"- severity {alert.severity} ({rule_label(alert.rule)}), {alert.site}/{alert.device}, "
            f"{alert.count} time(s), last {_when(alert.last_seen_ms)}, {alert.status}",
            f"  {alert.summary}",
            f"  {alert_link(settings, alert.id)}",
        ]
    lines += ["", f"You receive this as a Hedgerow contact ({contact.name})."]
    return _message(settings, contact, subject, "\n".join(lines))


def send_email(smtp: SmtpSettings, message: EmailMessage) -> None:
    """Deliver one message; raises SendError with the server's reason."""
    try:
        password = smtp.password_file.read_text("utf-8").strip() if smtp.password_file else None
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
            if smtp.starttls:
                cafile = str(smtp.ca_file) if smtp.ca_file else None
                client.starttls(context=ssl.create_default_context(cafile=cafile))
            if smtp.username is not None and password is not None:
                client.login(smtp.username, password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise SendError(f"SMTP {smtp.host}:{smtp.port}: {exc}") from exc
