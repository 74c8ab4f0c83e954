"""A short-lived, blocking MQTT 5 session with a bounded inbox: enrolment's request and
response (agent/enrolment_client.py). Same client settings as the reporting link
(agent/report/mqtt.py); paho's types stop here too.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.report.errors import LinkError
from agent.report.mqtt import BrokerAddress, Message, close_sockets, make_client
from agent.report.mqtt_client import paho
from common.identity import MqttCredentials

log = logging.getLogger(__name__)

INBOX_LIMIT = 1000


class MqttSession:
    """One short-lived MQTT 5 connection with a bounded inbox. Methods block with a timeout."""

    def __init__(self, credentials: MqttCredentials, client_id: str) -> None:
        address = BrokerAddress.parse(credentials.url)
        self._host = address.host
        self._port = address.port
        self._inbox: queue.Queue[Message] = queue.Queue(INBOX_LIMIT)
        self._connected = threading.Event()  # the first CONNACK arrived (accepted or not)
        self._up = threading.Event()  # connected now; paho reconnects after a drop
        self._refused: str | None = None
        self._acked = threading.Condition()
        self._results: dict[int, str] = {}  # packet id -> "" (acknowledged) or refusal reason
        self._dropped = 0
        self._started = False
        client = make_client(credentials, client_id, address)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self._client = client

    @property
    def dropped(self) -> int:
        """Messages dropped because the inbox was full."""
        return self._dropped

    def connect(self, timeout_s: float) -> None:
        """Connect and wait until the broker accepts us; raises LinkError."""
        try:
            self._client.connect(self._host, self._port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:
            raise LinkError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        if not self._connected.wait(timeout_s) or self._refused is not None:
            reason = self._refused or "no answer"
            self.close()
            raise LinkError(f"broker {self._host}:{self._port} refused us: {reason}")

    def _wait_up(self, timeout_s: float, what: str) -> None:
        # A broker may drop us (e.g. after refusing a publish); paho reconnects on its own.
        if not self._up.wait(timeout_s):
            raise LinkError(f"not connected to {self._host}:{self._port} for {what}")

    def subscribe(self, topic_filter: str, timeout_s: float) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK; raises LinkError."""
        self._wait_up(timeout_s, f"subscription to {topic_filter}")
        rc, mid = self._client.subscribe(topic_filter, qos=1)
        if rc is not MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"cannot subscribe to {topic_filter}: {paho.error_string(rc)}")
        self._check(self._wait_ack(mid, timeout_s), f"subscription to {topic_filter}")

    def publish(self, topic: str, payload: bytes, *, retain: bool, timeout_s: float) -> None:
        """Publish at QoS 1 and wait for the PUBACK; raises LinkError if refused."""
        self._wait_up(timeout_s, f"publish to {topic}")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc is MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Dropped before paho noticed: it keeps the message and sends it on reconnecting.
            log.info("broker link dropped; %s goes out after paho reconnects", topic)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise LinkError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        self._check(self._wait_ack(info.mid, timeout_s), f"publish to {topic}")

    @staticmethod
    def _check(result: str | None, what: str) -> None:
        if result is None:
            raise LinkError(f"no acknowledgement for {what} in time")
        if result:
            raise LinkError(f"broker refused {what}: {result}")

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
            close_sockets(self._client)

    # paho callbacks (network thread): convert to our types, hand off, return.

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("broker %s refused the connection: %s", self._host, reason)
        else:
            self._up.set()
        self._connected.set()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._up.clear()
        log.info("disconnected from broker %s: %s", self._host, reason)

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
