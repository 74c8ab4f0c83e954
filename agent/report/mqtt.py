"""The agent side's paho-mqtt boundary (with agent/report/session.py): a QoS 1 publishing link
that reports each PUBACK and what arrives on its subscriptions (MqttLink, for reports and their
receipts). The short blocking request/response session of enrolment is MqttSession, in
session.py, built on the same client settings.

paho's types stop here (as in aiomqtt's message.py:_from_paho_message): callers see `Ack`,
`LinkState` and `LinkError`. MQTT 5, callback API v2, client id = device id. No persistent
session is needed (the on-disk spool is the device's durable state); with `will_delay_s` the
session lives just that long, so a network blip shorter than it does not fire the will. paho's own network thread reconnects
with exponential backoff and re-sends QoS 1 messages still awaiting PUBACK, in order. The link
subscribes again on every connection (without a session nothing remembers the subscription),
so a retained message (the device's receipt) arrives afresh each time.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.report.errors import LinkError
from agent.report.mqtt_client import paho
from common.identity import MqttCredentials

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is: host, port and whether to use TLS."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse mqtt://host[:port] or mqtts://host[:port]; raises LinkError naming the URL."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise LinkError(f"broker URL {url!r}: {exc}") from exc
        if parts.scheme not in DEFAULT_PORTS:
            raise LinkError(f"broker URL {url!r}: scheme must be mqtt or mqtts")
        if not parts.hostname:
            raise LinkError(f"broker URL {url!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise LinkError(f"broker URL {url!r}: unexpected path or query")
        return cls(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


def make_client(
    credentials: MqttCredentials, client_id: str, address: BrokerAddress
) -> paho.Client:
    """A paho MQTT 5 client with our logger, credentials and TLS; raises LinkError."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.enable_logger(logging.getLogger(__name__ + ".paho"))
    try:
        if credentials.username is not None:
            client.username_pw_set(credentials.username, credentials.password)
        if address.tls:
            client.tls_set(ca_certs=credentials.ca, cert_reqs=ssl.CERT_REQUIRED)
    except (ValueError, OSError, ssl.SSLError) as exc:
        raise LinkError(f"cannot configure the broker link: {exc}") from exc
    return client


def close_sockets(client: paho.Client) -> None:
    """Close the socket pair loop_start() made, which loop_stop() leaves open (paho 2.1), and
    any socket a dropped connection left."""
    client._reset_sockets()


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes if the link dies without a clean disconnect."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """The broker's answer to one publish: `token` is what publish() returned."""

    token: int
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class LinkState:
    """A connection change: up, or down with a reason."""

    connected: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    """One message received on a subscription."""

    topic: str
    payload: bytes
    retained: bool


class MqttLink:
    """Publishes QoS 1 messages to one broker and reports acknowledgements and state changes.

    Callbacks run on paho's network thread: keep them short (hand off to a queue).
    """

    def __init__(
        self,
        credentials: MqttCredentials,
        client_id: str,
        *,
        on_ack: Callable[[Ack], None],
        on_state: Callable[[LinkState], None],
        will: Will | None = None,
        max_inflight: int = 32,
        keepalive_s: int = 30,
        min_backoff_s: int = 1,
        max_backoff_s: int = 60,
        will_delay_s: int = 0,
        subscriptions: Sequence[str] = (),
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self._address = BrokerAddress.parse(credentials.url)
        self._on_ack = on_ack
        self._on_state = on_state
        self._on_message = on_message
        self._subscriptions = list(subscriptions)
        self._subscribe_mid: int | None = None
        self._refusal_logged = False
        self._keepalive = keepalive_s
        self._will_delay_s = will_delay_s
        self._started = False
        self._lock = threading.Lock()
        client = make_client(credentials, client_id, self._address)
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(min_backoff_s, max_backoff_s)
        try:
            if will is not None:
                will_props = _properties(PacketTypes.WILLMESSAGE)
                if will_delay_s > 0:
                    will_props.WillDelayInterval = will_delay_s
                client.will_set(
                    will.topic, will.payload, qos=1, retain=False, properties=will_props
                )
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise LinkError(f"cannot configure the broker link: {exc}") from exc
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_connect_fail = self._handle_connect_fail
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        self._unreachable_logged = False
        self._client = client

    @property
    def address(self) -> BrokerAddress:
        """The broker this link talks to."""
        return self._address

    def start(self) -> None:
        """Start connecting in the background; paho keeps retrying with backoff."""
        with self._lock:
            if self._started:
                return
            # With a will delay, a session outlives a dropped connection by that long, so a quick
            # reconnect resumes it and the broker never sends the will; without, no session at all.
            props = _properties(PacketTypes.CONNECT)
            if self._will_delay_s > 0:
                props.SessionExpiryInterval = self._will_delay_s
            try:
                self._client.connect_async(
                    self._address.host,
                    self._address.port,
                    keepalive=self._keepalive,
                    clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY
                    if self._will_delay_s > 0
                    else True,
                    properties=props,
                )
            except (ValueError, OSError) as exc:
                raise LinkError(f"cannot connect to {self._address}: {exc}") from exc
            if self._client.loop_start() is not MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise LinkError("cannot start the MQTT network thread")
            self._started = True

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return bool(self._client.is_connected())

    def publish(self, topic: str, payload: bytes) -> int:
        """Send at QoS 1; returns a token that a later Ack carries. Raises LinkError.

        While disconnected, paho holds the message and sends it after reconnecting.
        """
        try:
            info = self._client.publish(topic, payload, qos=1, retain=False)
        except (ValueError, TypeError) as exc:
            raise LinkError(f"cannot publish to {topic}: {exc}") from exc
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise LinkError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        return int(info.mid)

    def stop(self) -> None:
        """Disconnect cleanly (the broker then discards the will) and join paho's thread."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()
            close_sockets(self._client)
            # paho closes its internal socket pair only in Client.__del__; break the
            # client <-> callback cycle so that runs now, not during some later GC pass.
            self._client.on_connect = None
            self._client.on_disconnect = None
            self._client.on_publish = None
            self._client.on_connect_fail = None
            self._client.on_message = None
            self._client.on_subscribe = None

    # paho callbacks: convert to our types here and nowhere else.

    def _handle_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the connection: %s", self._address.host, reason)
            self._on_state(LinkState(False, str(reason)))
            return
        log.info("connected to broker %s:%d", self._address.host, self._address.port)
        self._unreachable_logged = False
        if self._subscriptions:
            options = SubscribeOptions(qos=1)
            _rc, self._subscribe_mid = client.subscribe(
                [(topic, options) for topic in self._subscriptions]
            )
        self._on_state(LinkState(True, str(reason)))

    def _handle_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if mid == self._subscribe_mid and failed and not self._refusal_logged:
            self._refusal_logged = True  # once: it would repeat on every reconnection
            log.warning(
                "broker %s refused subscription %s: %s", self._address.host,
                self._subscriptions, ", ".join(failed),
            )  # fmt: skip

    def _handle_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        # An exception here would stop paho's network thread: contain it.
        try:
            if self._on_message is not None:
                self._on_message(Message(str(msg.topic), bytes(msg.payload), bool(msg.retain)))
        except Exception:
            log.exception("cannot hand off a message on %r", msg.topic)

    def _handle_connect_fail(self, _client: Any, _userdata: Any) -> None:
        # Once per outage at WARNING; paho keeps retrying with backoff (its own DEBUG lines).
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning(
                "cannot reach broker %s:%d; retrying with backoff",
                self._address.host,
                self._address.port,
            )

    def _handle_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        log.info("disconnected from broker %s: %s", self._address.host, reason)
        self._on_state(LinkState(False, str(reason)))

    def _handle_publish(
        self, _client: Any, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        self._on_ack(Ack(int(mid), not reason.is_failure, str(reason)))
