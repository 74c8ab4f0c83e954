"""The hub's connection to the broker: the only hub module that imports paho-mqtt.

MQTT 5 with a persistent session (clean_start off, Session Expiry Interval from the config), so
reports sent while the hub is down wait at the broker; manual acknowledgements, so a message is
acknowledged only after the hub has committed it (ingest calls ack()). Receive Maximum caps how
many unacknowledged messages the broker hands us at once; ingest sizes its queue above it.

Mosquitto binds client ids to user names (use_username_as_clientid), so another login cannot
take this session over; if the hub's own login is used elsewhere, the broker ends our session
with "session taken over" (0x8E): that is logged and handed to on_takeover (a security alert).
Retained messages published on report or request topics are cleared at once (an empty retained
message), so nothing a device sends stays on the broker. Retained enrolment replies expire after
REPLY_EXPIRY_S.

paho's types stop here: callers see Incoming values and plain callables (aiomqtt's
message.py:_from_paho_message is the model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from common.wire.topics import up_filter
from hub.config import MqttConfig
from hub.errors import HubError

log = logging.getLogger(__name__)

SHARE_GROUP = "hedgerow-hub"
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us at once
KEEPALIVE_S = 30
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code
REPLY_EXPIRY_S = 600  # a retained enrolment reply stays this long at the broker
REFUSED_KEPT = 10_000  # refused publications remembered for wait_acked()
_INBOUND = ("/request", "/summary", "/event", "/heartbeat")  # topics devices publish on
# Mosquitto 2.0 closes a taken-over connection without a DISCONNECT packet, but logs it at
# level E, which `log_dest topic` (the shipped config) publishes here, to the hub alone (ACL).
BROKER_ERRORS = "$SYS/broker/log/E"
TAKEOVER_LINE = "Client {id} already connected, closing old connection."
KICK_WINDOW_S = 5.0  # our connection closing this soon after that line: it was taken over


class MqttError(HubError):
    """The broker connection could not be set up."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message from the broker, in our terms."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # which connection delivered it: acks are valid only on that connection
    received_ms: int  # wall clock, stored with the report
    arrived: float  # monotonic, for latency metrics


def report_filter(shared: bool) -> str:
    """What the hub subscribes to: every device report (and enrolment request), optionally
    through a shared subscription so several hub processes split the load."""
    topic = up_filter()
    return f"$share/{SHARE_GROUP}/{topic}" if shared else topic


class MqttConnection:
    """A persistent-session MQTT 5 client with manual acks, run by paho's own network thread."""

    def __init__(
        self,
        config: MqttConfig,
        on_message: Callable[[Incoming], None] | None = None,
        *,
        subscriptions: Sequence[str] = (),
        client_id: str | None = None,
        username: str | None = None,
        receive_maximum: int = RECEIVE_MAXIMUM,
    ) -> None:
        self.config = config
        self.on_message = on_message  # set before start()
        self._subscriptions = list(subscriptions)
        self._receive_maximum = receive_maximum
        self._generation = 0
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        # QoS 1 publications the broker has not acknowledged yet (mid -> topic), and the
        # outcome of those it has (mid -> reason, None when accepted). PUBACK can arrive before
        # publish() returns, so outcomes are kept until publish() has recorded its mid.
        self._unacked: dict[int, str] = {}
        self._outcomes: dict[int, str | None] = {}
        self._refused: deque[tuple[str, str]] = deque(maxlen=REFUSED_KEPT)
        self.on_takeover: Callable[[], None] | None = None  # set before start()
        self._kick_seen: tuple[int, float] | None = None  # (generation, when) of a takeover line
        self._log_mid: int | None = None
        self._ids = {i for i in (client_id or config.client_id, username or config.username) if i}
        self.takeovers = 0
        self.cleared_retained = 0
        self._acked = threading.Condition(self._lock)
        url = urlparse(config.url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or config.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        # paho logs every failed attempt at ERROR ("Socket: None"); its lines are for debugging.
        # What an operator reads is one line per change of state, from the callbacks below.
        if log.isEnabledFor(logging.DEBUG):
            self._client.enable_logger(logging.getLogger(__name__ + ".paho"))
        self._down = False  # a "cannot reach" or "disconnected" line was logged
        self.failed_attempts = 0
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self._client.on_message = self._message
        self._client.on_publish = self._published
        self._client.on_connect_fail = self._connect_failed
        try:
            if url.scheme == "mqtts":
                self._client.tls_set(
                    ca_certs=str(config.ca) if config.ca else None,
                    certfile=str(config.cert) if config.cert else None,
                    keyfile=str(config.key) if config.key else None,
                )
            if username or config.username:
                password = None
                if config.password_file:
                    password = config.password_file.read_text("utf-8").strip()
                self._client.username_pw_set(username or config.username, password)
        except (OSError, ValueError) as exc:
            raise MqttError(f"mqtt: cannot set up TLS or credentials: {exc}") from exc

    def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and subscribe."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        try:
            self._client.connect_async(
                self._host,
                self._port,
                keepalive=KEEPALIVE_S,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise MqttError(f"mqtt: cannot connect to {self.config.url}: {exc}") from exc
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect (the session stays at the broker) and join paho's thread."""
        with self._lock:
            self._down = True  # a stop we asked for is not news
        self._client.disconnect()
        self._client.loop_stop()
        # loop_start() made a socket pair that loop_stop() leaves open (paho 2.1): close it
        # and any socket left by a connection the broker dropped.
        self._client._reset_sockets()
        self.connected.clear()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected and subscribed; False on timeout."""
        deadline = time.monotonic() + timeout
        if not self.connected.wait(timeout):
            return False
        return not self._subscriptions or self.subscribed.wait(
            max(0.0, deadline - time.monotonic())
        )

    def ack(self, message: Incoming) -> bool:
        """Acknowledge a message on the connection that delivered it. After a reconnect the
        broker redelivers it instead (a packet id may be reused), so a stale ack is dropped."""
        with self._lock:
            if message.generation != self._generation or message.qos == 0:
                return False
        self._client.ack(message.mid, message.qos)
        return True

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Queue a QoS 1 publication (sent as soon as the connection allows); wait_acked()
        tells whether the broker took it."""
        props = None
        if retain and topic.endswith("/reply"):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = REPLY_EXPIRY_S
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttError(f"mqtt: cannot publish to {topic}: {paho.error_string(info.rc)}")
        with self._acked:
            if info.mid in self._outcomes:
                self._settle(info.mid, topic)
            else:
                self._unacked[info.mid] = topic

    def _settle(self, mid: int, topic: str) -> None:
        reason = self._outcomes.pop(mid)
        if reason is not None:
            self._refused.append((topic, reason))

    def wait_acked(self, timeout: float) -> tuple[list[str], list[tuple[str, str]]]:
        """Wait until the broker has acknowledged every publication; returns the topics still
        unacknowledged at the timeout and the (topic, reason) of those it refused."""
        deadline = time.monotonic() + timeout
        with self._acked:
            while self._unacked:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._acked.wait(left)
            return sorted(self._unacked.values()), list(self._refused)

    def _connected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            with self._lock:
                first, self._down = not self._down, True
                self.failed_attempts += 1
            if first:
                log.error("broker %s refused the connection: %s", self.config.url, reason)
            return
        with self._lock:
            self._generation += 1
            self._down = False
        log.info("connected to %s (session present: %s)", self.config.url, flags.session_present)
        self.connected.set()
        if self._subscriptions:
            # Not one of self._subscriptions: a broker that refuses it (no log_dest topic, an
            # older ACL) must not keep the hub from being ready.
            self._log_mid = client.subscribe(BROKER_ERRORS, qos=0)[1]
            # A resumed session keeps its subscriptions; subscribing again is harmless.
            shared = any(s.startswith("$share/") for s in self._subscriptions)
            options = SubscribeOptions(
                qos=1,
                noLocal=not shared,  # never see our own enrolment replies or policies
                retainAsPublished=True,  # so that a retained report or request can be cleared
                retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,
            )
            client.subscribe([(topic, options) for topic in self._subscriptions])

    def _subscribed(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        if mid == self._log_mid:
            return  # the broker-log subscription: nothing to report either way
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused subscription %s: %s", self._subscriptions, failed)
            return
        self.subscribed.set()

    def _disconnected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        with self._lock:
            first, self._down = not self._down, True
            kick, self._kick_seen = self._kick_seen, None
        logged_kick = (
            kick is not None
            and kick[0] == self._generation
            and time.monotonic() - kick[1] < KICK_WINDOW_S
        )
        if logged_kick or getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            self._taken_over()
            return
        if first:
            log.warning("disconnected from %s: %s; reconnecting", self.config.url, reason)

    def _connect_failed(self, client: paho.Client, userdata: Any) -> None:
        with self._lock:
            first, self._down = not self._down, True
            self.failed_attempts += 1
        if first:
            log.warning(
                "cannot reach the broker at %s; retrying every 1-30 s until it answers",
                self.config.url,
            )

    def _published(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        refused = str(reason) if getattr(reason, "is_failure", False) else None
        with self._acked:
            self._outcomes[mid] = refused
            topic = self._unacked.pop(mid, None)
            if topic is not None:
                self._settle(mid, topic)
            self._acked.notify_all()

    def _taken_over(self) -> None:
        self.takeovers += 1
        log.error(
            "SECURITY: the broker ended the hub's session: session taken over (another "
            "connection logged in with the hub's client id; is the hub's password in use "
            "elsewhere?); reconnecting"
        )
        if self.on_takeover is not None:
            try:
                self.on_takeover()
            except Exception:
                log.exception("cannot report the session takeover")

    def _broker_error(self, text: str) -> None:
        # The line comes just before the broker closes the old connection of that client id:
        # if ours closes within KICK_WINDOW_S, another connection took our session; if not,
        # we were the new one (closing a stale connection of our own).
        if any(TAKEOVER_LINE.format(id=i) in text for i in self._ids):
            with self._lock:
                self._kick_seen = (self._generation, time.monotonic())

    def _clear_retained(self, topic: str) -> None:
        # A device cannot make a report or request stay at the broker: the empty retained
        # message deletes it. The message itself is still ingested like any other.
        self.cleared_retained += 1
        log.warning("cleared a retained message on %s (devices must not retain)", topic)
        self._client.publish(topic, b"", qos=1, retain=True)

    def _message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # An exception here would stop paho's network thread: contain it (mitmproxy's safecall).
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = ""
            if topic == BROKER_ERRORS:
                self._broker_error(bytes(msg.payload).decode("utf-8", "replace"))
                return
            if msg.retain and topic.endswith(_INBOUND):
                self._clear_retained(topic)
            incoming = Incoming(
                topic=topic,
                payload=bytes(msg.payload),
                mid=msg.mid,
                qos=msg.qos,
                generation=self._generation,
                received_ms=int(time.time() * 1000),
                arrived=time.monotonic(),
            )
            if self.on_message is not None:
                self.on_message(incoming)
        except Exception:
            log.exception("error handing off a message from %r", msg.topic)
