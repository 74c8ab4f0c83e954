"""A small blocking MQTT session for enrolment: connect, subscribe, wait for a message, publish.

This module and agent/report/mqtt.py are the agent side's paho-mqtt imports. The report link
only publishes; enrolment must also read a retained topic and a reply, so it has its own
session here until the two adapters are merged. paho's types stop here: callers see
`Message` and `EnrollLinkError`.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import HedgerowError
from agent.identity import MqttCredentials

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
QUEUE_LIMIT = 1000


class EnrollLinkError(HedgerowError):
    """The broker could not be reached, refused us, or did not acknowledge in time."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message received on a subscription."""

    topic: str
    payload: bytes
    retained: bool


class MqttSession:
    """One short-lived MQTT 5 connection with a bounded inbox. Methods block with a timeout."""

    def __init__(self, credentials: MqttCredentials, client_id: str) -> None:
        parts = urlsplit(credentials.url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise EnrollLinkError(f"broker URL {credentials.url!r}: must be mqtt(s)://host[:port]")
        self._host = parts.hostname
        self._port = parts.port or DEFAULT_PORTS[parts.scheme]
        self._inbox: queue.Queue[Message] = queue.Queue(QUEUE_LIMIT)
        self._connected = threading.Event()
        self._refused: str | None = None
        self._acked = threading.Condition()
        self._results: dict[int, str] = {}  # packet id -> "" (acknowledged) or refusal reason
        self._dropped = 0
        self._started = False
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        client.enable_logger(logging.getLogger(__name__ + ".paho"))
        try:
            if credentials.username is not None:
                client.username_pw_set(credentials.username, credentials.password)
            if parts.scheme == "mqtts":
                client.tls_set(ca_certs=credentials.ca, cert_reqs=ssl.CERT_REQUIRED)
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise EnrollLinkError(f"cannot configure the broker link: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._client = client

    @property
    def dropped(self) -> int:
        """Messages dropped because the inbox was full."""
        return self._dropped

    def connect(self, timeout_s: float) -> None:
        """Connect and wait until the broker accepts us; raises EnrollLinkError."""
        try:
            self._client.connect(self._host, self._port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:
            raise EnrollLinkError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(timeout_s) or self._refused is not None:
            reason = self._refused or "no answer"
            self.close()
            raise EnrollLinkError(f"broker {self._host}:{self._port} refused us: {reason}")

    def subscribe(self, topic_filter: str, timeout_s: float) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK; raises EnrollLinkError."""
        rc, mid = self._client.subscribe(topic_filter, qos=1)
        if rc is not MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise EnrollLinkError(f"cannot subscribe to {topic_filter}: {paho.error_string(rc)}")
        self._check(self._wait_ack(mid, timeout_s), f"subscription to {topic_filter}")

    def publish(self, topic: str, payload: bytes, *, retain: bool, timeout_s: float) -> None:
        """Publish at QoS 1 and wait for the PUBACK; raises EnrollLinkError if refused."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc is not MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise EnrollLinkError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        self._check(self._wait_ack(info.mid, timeout_s), f"publish to {topic}")

    @staticmethod
    def _check(result: str | None, what: str) -> None:
        if result is None:
            raise EnrollLinkError(f"no acknowledgement for {what} in time")
        if result:
            raise EnrollLinkError(f"broker refused {what}: {result}")

    def receive(self, timeout_s: float) -> Message | None:
        """The next message from any subscription, or None after `timeout_s`."""
        try:
            return self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Disconnect and join paho's network thread."""
        if self._started:
            self._started = False
            self._client.disconnect()
            self._client.loop_stop()

    # paho callbacks (network thread): convert to our types, hand off, return.

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("broker %s refused the connection: %s", self._host, reason)
        self._connected.set()

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        try:
            self._inbox.put_nowait(Message(str(msg.topic), bytes(msg.payload), bool(msg.retain)))
        except queue.Full:
            self._dropped += 1
            log.warning("enrolment inbox full: dropped a message on %s", msg.topic)

    def _wait_ack(self, mid: int, timeout_s: float) -> str | None:
        """ "" when acknowledged, the broker's reason when refused, None on timeout."""
        with self._acked:
            if not self._acked.wait_for(lambda: mid in self._results, timeout_s):
                return None
            return self._results.pop(mid)

    def _ack(self, mid: int, failure: str = "") -> None:
        with self._acked:
            self._results[mid] = failure
            self._acked.notify_all()

    def _on_publish(
        self, _client: Any, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        self._ack(mid, str(reason) if reason.is_failure else "")

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        self._ack(mid, ", ".join(failed))
