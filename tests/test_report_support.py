"""Shared pieces for the report tests: generated identities and a plain paho subscriber.

The subscriber stands in for the hub's side of the broker; tests open what it receives with the
real common.wire functions. (No tests here; the name keeps it among the report tests' files.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from common.identity import Identity, MqttCredentials
from common.wire import (
    DeviceRecord,
    Header,
    Kind,
    Opened,
    OpeningKey,
    ReplayWindow,
    SigningKey,
    open_envelope,
    unseal,
)
from common.wire.header import SuiteId

SITE = "test-school"
DEVICE = "pi-1"


@dataclass
class Device:
    """A generated identity saved to disk, with the hub's private key to open its reports."""

    identity: Identity
    directory: Path
    hub_key: OpeningKey

    def open(self, data: bytes, kind: Kind) -> Opened:
        """Open an envelope as the device's own check would."""
        return unseal(data, signer=self.identity.key.verify_key, key=self.hub_key, kind=kind)


def make_device(tmp: Path, url: str, device: str = DEVICE, group: str | None = "pupils") -> Device:
    """A fresh identity with generated keys, saved in tmp/identity-<device>."""
    hub_key = OpeningKey.generate(SuiteId.X25519)
    identity = Identity(
        site=SITE,
        device=device,
        device_class="sinkhole",
        group=group,
        key=SigningKey.generate(),
        hub_key=hub_key.public_key,
        hub_verify_keys=(SigningKey.generate().verify_key,),
        mqtt=MqttCredentials(url=url),
    )
    directory = tmp / f"identity-{device}"
    identity.save(directory)
    return Device(identity, directory, hub_key)


class HubSide:
    """The hub's opening pipeline (open_envelope) over one device, with a replay window."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self.replay = ReplayWindow()

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        """DeviceDirectory: the one device we know."""
        ident = self._device.identity
        if (site, device) == (ident.site, ident.device):
            return DeviceRecord(ident.key.verify_key)
        return None

    def opening_key(self, key_id: bytes) -> OpeningKey | None:
        """Keyring: the hub key."""
        key = self._device.hub_key
        return key if key.key_id == key_id else None

    def check(self, header: Header, digest: bytes) -> bool:
        """ReplayGuard."""
        return self.replay.check(header, digest)

    def open(self, data: bytes) -> Opened:
        """Open and accept a new envelope; raise if it is a duplicate."""
        opened = open_envelope(data, devices=self, keyring=self, replay=self)
        assert isinstance(opened, Opened), "unexpected duplicate"
        self.replay.accept(opened.header, opened.digest)
        return opened


@dataclass(frozen=True)
class Received:
    """One message the subscriber got."""

    topic: str
    payload: bytes
    dup: bool


class Subscriber:
    """A plain paho client collecting everything under hedgerow/v1/# at QoS 1.

    With `persistent`, its session (and messages queued for it) survives a broker restart.
    """

    def __init__(self, url: str, client_id: str = "test-subscriber", persistent: bool = False):
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        host, port = url.removeprefix("mqtt://").split(":")
        # A persistent session uses MQTT 3.1.1 clean_session=False: Mosquitto 2.0.11 restores
        # those from its persistence file after a restart (it loses v5 session-expiry ones).
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311 if persistent else paho.MQTTv5,
            clean_session=False if persistent else None,
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect_async(host, int(port), keepalive=10)
        self._client.loop_start()
        assert self._subscribed.wait(15), "test subscriber could not subscribe"

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe("hedgerow/v1/#", qos=1)
            self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.dup)))
            self._cond.notify_all()

    def wait_for(self, done: Callable[[list[Received]], bool], timeout: float = 20.0) -> None:
        """Wait until `done(messages)` holds; fail loudly on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.messages):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out; got {len(self.messages)} messages"
                self._cond.wait(remaining)

    def on(self, topic_suffix: str) -> list[Received]:
        """Messages whose topic ends with `topic_suffix`."""
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish a marker message and wait for its PUBACK."""
        self._client.publish(topic, payload, qos=1).wait_for_publish(15)

    def close(self) -> None:
        """Disconnect, join paho's thread and break the callback cycle (paho closes its socket
        pair only when the client is freed)."""
        self._client.disconnect()
        self._client.loop_stop()
        self._client.on_connect = None
        self._client.on_message = None


@contextmanager
def subscriber(url: str, **options: Any) -> Iterator[Subscriber]:
    """A Subscriber, closed afterwards."""
    sub = Subscriber(url, **options)
    try:
        yield sub
    finally:
        sub.close()


class TcpProxy:
    """A loopback TCP forwarder whose connections can be cut, to simulate a network blip."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="test-proxy")
        self._acceptor.start()

    @property
    def url(self) -> str:
        """mqtt:// URL through the proxy."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=self._pump, args=(src, dst))
                    self._threads.append(thread)
                    thread.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection abruptly (no MQTT DISCONNECT); new ones are accepted."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
            threads, self._threads = self._threads, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(10)
        for sock in sockets:
            sock.close()

    def close(self) -> None:
        """Cut everything and stop listening."""
        self._closing.set()
        self._acceptor.join(10)
        self.cut()
        self._listener.close()
