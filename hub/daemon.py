"""`hedgerow-hub serve`: ingest, rules and notifications in one service.

Everything that reads hub.toml (rules, contacts, enrolment, metrics) is read before anything
starts. Start order: database (migrated), metrics endpoint, ingest thread, then the broker
connection (so nothing arrives before ingest can take it), notifications, retained policies. Stop order is the reverse of what
matters for safety: ingest finishes its batch (commit, ack) before the connection closes,
and the receipts thread publishes what that batch committed before it does.
"""

from __future__ import annotations

import logging
import threading
import time

from common.errors import HedgerowError
from hub.config import HubConfig, load_config
from hub.enroll.answer import EnrollService
from hub.hub_alerts import raise_hub_alert
from hub.ingest.hooks import ReportRules, acking
from hub.ingest.settings import load_ingest_settings
from hub.ingest.worker import IngestWorker
from hub.keys import HubKeys
from hub.metrics import HubMetrics, metrics_listen
from hub.mqtt import MqttConnection, report_filter
from hub.notify.outbox import NotificationOutbox
from hub.notify.sender import NotificationSender
from hub.notify.settings import load_notify_settings
from hub.policy.publish import Decision, publish_all
from hub.receipts import ReceiptPublisher
from hub.rules.engine import RuleEngine
from hub.rules.settings import load_rules
from hub.store import Database

log = logging.getLogger(__name__)
RECEIPTS_FLUSH_S = 2.0  # how long stop waits for the broker to take the last receipts


class HubService:
    """The running hub. start() and stop() from one thread; reload() on SIGHUP."""

    def __init__(
        self,
        config: HubConfig,
        *,
        rules: ReportRules | None = None,
        opening_processes: int | None = None,
    ) -> None:
        self.config = config
        # Everything that reads hub.toml is read here, before anything starts: a bad file
        # stops serve at once with a message naming the section and key.
        ingest = load_ingest_settings(config)  # [ingest]
        workers = ingest.workers
        self._bursts = ingest.bursts
        self.opening_processes = workers if opening_processes is None else opening_processes
        self.keys = HubKeys(config.keys_dir)
        self.metrics = HubMetrics()
        self.metrics_port: int | None = None
        self._listen = metrics_listen(config)
        self._outbox = NotificationOutbox(config)
        self._engine: RuleEngine | None = None
        self._rules: ReportRules
        if rules is not None:
            self._rules = rules  # tests and benches may bring their own
        else:
            self._engine = RuleEngine(load_rules(config), self._outbox)
            self._rules = self._engine
        self._sender = NotificationSender(config, config.database_url)
        self.worker: IngestWorker | None = None
        self.connection: MqttConnection | None = None
        self.receipts: ReceiptPublisher | None = None

    def start(self) -> None:
        """Bring everything up. Raises HubError if any part cannot start."""
        db = Database(self.config.database_url)
        try:
            db.migrate()
        finally:
            db.close()
        if self._listen is not None:
            self.metrics_port = self.metrics.serve(*self._listen)
        connection = MqttConnection(
            self.config.mqtt, subscriptions=[report_filter(self.config.mqtt.shared)]
        )
        # Delivery receipts: told of every message after its commit (through ingest's ack).
        receipts = ReceiptPublisher(
            self.config.database_url, self.keys, connection.publish, self.metrics
        )
        self.receipts = receipts
        self.worker = IngestWorker(
            self.config.database_url,
            self.keys,
            ack=acking(connection.ack, receipts),
            metrics=self.metrics,
            rules=self._rules,
            enroll=EnrollService(
                self.config, self.keys, publish=connection.publish, metrics=self.metrics
            ),
            publish=connection.publish,
            opening_processes=self.opening_processes,
            keys_dir=self.config.keys_dir,
            bursts=self._bursts,
        )
        connection.on_message = self.worker.offer
        connection.on_takeover = self._session_taken_over
        receipts.start()
        self.worker.start()
        self.connection = connection
        connection.start()
        self._sender.start()
        self._publish_policies()

    def _session_taken_over(self) -> None:
        """paho's thread: record the security alert on a thread of its own (the database may
        be busy with a batch; paho's network loop must not wait for it)."""
        threading.Thread(target=self._record_takeover, name="takeover-alert", daemon=True).start()

    def _record_takeover(self) -> None:
        db = Database(self.config.database_url)
        try:
            with db.transaction():
                raise_hub_alert(
                    db,
                    self.config,
                    device=self.config.mqtt.username or self.config.mqtt.client_id,
                    key="session_taken_over",
                    summary=(
                        "The broker ended the hub's session because another connection logged "
                        "in with the hub's client id (session taken over). Reports queued for "
                        "the hub may have been lost; the hub's broker password may be in use "
                        "elsewhere. Check the broker log and change the password."
                    ),
                    at_ms=int(time.time() * 1000),
                    severity=5,
                )
        except HedgerowError as exc:
            log.error("cannot record the session-takeover alert: %s", exc)
        finally:
            db.close()

    def _publish_policies(self) -> None:
        """Retained policies are queued now and go out as soon as the broker connects."""
        assert self.connection is not None
        db = Database(self.config.database_url)
        try:
            decision = Decision(
                f"hub.toml as {self.config.path} read it at start", how="hedgerow-hub serve"
            )
            publish_all(db, self.keys, self.config, self.connection.publish, decision=decision)
        except HedgerowError as exc:
            # A bad DATA/policy/<site>.toml (ConfigError) or a store failure must not stop
            # ingest: devices keep the policy they hold until the next publish.
            log.error(
                "cannot publish policies at start (devices keep their current policy; fix it "
                "and run 'hedgerow-hub policy publish'): %s",
                exc,
            )
        finally:
            db.close()

    def wait_ready(self, timeout: float) -> bool:
        """True once connected and subscribed."""
        return self.connection is not None and self.connection.wait_ready(timeout)

    @property
    def healthy(self) -> bool:
        """False if the ingest thread died (serve exits with an error then)."""
        return self.worker is not None and self.worker.alive

    def stalled_s(self, now: float) -> float:
        """Seconds the ingest loop has not gone round (0 before it starts)."""
        return 0.0 if self.worker is None else self.worker.stalled_s(now)

    def reload(self) -> bool:
        """SIGHUP: re-read the keys (the ingest thread then opens the envelopes held for a new
        one), and hub.toml's rules and contacts; each all or nothing."""
        if not self.keys.reload():
            log.info("reload: the hub keys are unchanged")
        if self._engine is None:
            log.info("reload: rules were given by the caller; nothing to reload")
            return False
        try:
            config = load_config(self.config.path)
            rules = load_rules(config)
            notify = load_notify_settings(config)
        except HedgerowError as exc:
            log.error("reload failed, keeping the rules and contacts in force: %s", exc)
            return False
        self._engine.replace_rules(rules)
        self._outbox.settings = notify  # one reference swap each, like replace_rules
        self._sender.settings = notify
        log.info("reloaded rules and contacts from %s", self.config.path)
        return True

    def stop(self) -> None:
        """Finish the current batch (commit, ack), disconnect, stop the other threads."""
        if self.worker is not None:
            self.worker.stop()
        if self.receipts is not None:
            self.receipts.stop()  # the last receipts, for what the last batch committed
        if self.connection is not None:
            if self.connection.connected.is_set():
                self.connection.wait_acked(RECEIPTS_FLUSH_S)
            self.connection.stop()
        self._sender.stop()
        self.metrics.close()
