"""The notification sender: a thread with its own database connection that delivers due
outbox rows, retries failures with exponential backoff and sends each contact's daily digest.

Nothing is lost silently: every failure is logged and recorded on its row (attempts,
last_error); after max_attempts a row is marked "failed", logged as an error and listed by
`hedgerow-hub notify list`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import HedgerowError
from hub.alerts import AlertError, get_alert
from hub.config import HubConfig
from hub.errors import HubError
from hub.notify import escalation
from hub.notify.mail import SendError, alert_email, digest_email, send_email
from hub.notify.outbox import wall_ms
from hub.notify.settings import Contact, NotifySettings, load_notify_settings
from hub.notify.webhook import post_json, webhook_document
from hub.store import Database

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(frozen=True, slots=True)
class Due:
    """One outbox row that is due."""

    id: int
    alert_id: int
    channel: str
    contact: str
    attempts: int


class NotificationSender:
    """Delivers the outbox in the background: start() and stop(), or run_once() in tests."""

    def __init__(
        self,
        config: HubConfig,
        database_url: str,
        *,
        clock: Callable[[], int] = wall_ms,
        poll_s: float = 5.0,
    ) -> None:
        self.settings: NotifySettings = load_notify_settings(config)
        self.database_url = database_url
        self.clock = clock
        self.poll_s = poll_s
        self.sent = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sending thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hub-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (a send in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        db = Database(self.database_url)
        try:
            while not self._stop.is_set():
                try:
                    self.run_once(db)
                except Exception:
                    log.exception("notification round failed; trying again shortly")
                self._stop.wait(self.poll_s)
        finally:
            db.close()

    def run_once(self, db: Database) -> int:
        """Move the escalation chains on, then deliver every due row once; returns how many
        rows were delivered."""
        now = self.clock()
        settings = self.settings  # one read: a reload swaps the reference
        if settings.escalation is not None:
            try:
                escalation.step_due(db, settings, now)
            except HedgerowError:
                # Contained: the rows already due still go out; the chain is tried next round.
                log.exception("escalation round failed; trying again shortly")
        rows = db.execute(
            "SELECT id, alert_id, channel, contact, attempts FROM notifications "
            "WHERE status = 'pending' AND next_attempt_ms <= ? ORDER BY id LIMIT ?",
            (now, BATCH),
        )
        due = [Due(int(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]
        digests: dict[str, list[Due]] = {}
        delivered = 0
        for row in due:
            if row.channel == "digest":
                digests.setdefault(row.contact, []).append(row)
            else:
                delivered += self._deliver(db, [row], now)
        for batch in digests.values():
            delivered += self._deliver(db, batch, now)
        return delivered

    def _deliver(self, db: Database, rows: list[Due], now: int) -> int:
        first = rows[0]
        contact = self.settings.contact(first.contact)
        try:
            if contact is None:
                raise HubError(f"contact {first.contact!r} is no longer in hub.toml")
            self._send(db, contact, rows)
        except SendError as exc:
            self._failed(db, rows, str(exc), now)
            return 0
        except (HubError, AlertError) as exc:
            self._failed(db, rows, str(exc), now, give_up=True)
            return 0
        db.execute(
            f"UPDATE notifications SET status = 'sent', sent_ms = ?, attempts = attempts + 1 "
            f"WHERE id IN ({', '.join('?' for _ in rows)})",
            (now, *(r.id for r in rows)),
        )
        self.sent += len(rows)
        log.info("%s to %s delivered (%d alert(s))", first.channel, first.contact, len(rows))
        return len(rows)

    def _send(self, db: Database, contact: Contact, rows: list[Due]) -> None:
        channel = rows[0].channel
        if channel == "webhook":
            if contact.webhook is None:
                raise HubError(f"contact {contact.id!r} has no webhook any more")
            alert = get_alert(db, rows[0].alert_id)
            document = webhook_document(self.settings, alert, self._event(db, rows[0]))
            post_json(contact.webhook, document)
            return
        if contact.email is None or self.settings.smtp is None:
            raise HubError(f"contact {contact.id!r} has no email address or no [notify.smtp]")
        if channel == "digest":
            message = digest_email(
                self.settings, contact, [get_alert(db, r.alert_id) for r in rows]
            )
        else:
            alert = get_alert(db, rows[0].alert_id)
            told = escalation.told_before(db, alert.id, contact.id)
            by = escalation.escalated_by(db, alert.id)
            message = alert_email(self.settings, contact, alert, told, by)
        send_email(self.settings.smtp, message)

    @staticmethod
    def _event(db: Database, row: Due) -> str:
        earlier = db.execute(
            "SELECT 1 FROM notifications WHERE alert_id = ? AND contact = ? AND channel = ? "
            "AND id < ?",
            (row.alert_id, row.contact, row.channel, row.id),
        )
        return "alert.escalated" if earlier else "alert.new"

    def _failed(
        self, db: Database, rows: list[Due], error: str, now: int, *, give_up: bool = False
    ) -> None:
        self.failures += 1
        s = self.settings
        for row in rows:
            attempts = row.attempts + 1
            if give_up or attempts >= s.max_attempts:
                status, next_ms = "failed", now
                log.error(
                    "notification %d (%s to %s, alert %d) FAILED for good after %d attempt(s): %s",
                    row.id, row.channel, row.contact, row.alert_id, attempts, error,
                )  # fmt: skip
            else:
                delay_s = min(s.retry_max_s, s.retry_base_s * 2 ** (attempts - 1))
                status, next_ms = "pending", now + delay_s * 1000
                log.warning(
                    "notification %d (%s to %s) failed, attempt %d; retry in %d s: %s",
                    row.id, row.channel, row.contact, attempts, delay_s, error,
                )  # fmt: skip
            db.execute(
                "UPDATE notifications SET status = ?, attempts = ?, next_attempt_ms = ?, "
                "last_error = ? WHERE id = ?",
                (status, attempts, next_ms, error[:1000], row.id),
            )
