"""The shipped Mosquitto configuration over TLS, with certificates from `hedgerow-hub pki`.

A real broker runs firmware-config/mosquitto/hedgerow.conf itself: only its paths, ports and the
user it runs as are rewritten (line by line, as tests/test_broker_shipped.py does). Its
certificate comes from `pki init` and `pki issue server`; the accounts and ACL from `enroll
bundle`. Checked: anonymous, wrong-password and plaintext connections are refused on the TLS
port; a client verifies the broker against the CA and refuses another CA's or another host's
certificate; a device publishes only its own topics (MQTT 5 PUBACK reason codes, and nothing
delivered) and reads only its own policy; the hub reads everything; no other account takes
over the hub's session; and the agent's own MQTT link, from an imported bundle, verifies the
broker against the CA path it recorded. The last test runs a listener that requires client
certificates (not the shipped one, which logs in by password) to show that Mosquitto refuses
a certificate `pki revoke` put in the CRL.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.enrolment_client import enroll_from_bundle
from agent.report.mqtt import Ack, LinkState, MqttLink, close_sockets
from hub.cli import main as hub_main
from tests.enroll_fixtures import SITE, make_hub
from tests.services import _spawn_mosquitto, free_port, stop_process, wait_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "firmware-config" / "mosquitto" / "hedgerow.conf"
HUB_USER = "hedgerow-hub"
HUB_PASSWORD = "hub-broker-password-for-tls-tests"
NOT_AUTHORIZED = 0x87


def cli(*argv: str) -> str:
    """Run hedgerow-hub in this process; its stdout (fails the test on a non-zero exit)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = hub_main(list(argv))
    assert code == 0, out.getvalue()
    return out.getvalue()


def shipped_conf(pki: Path, broker_dir: Path, tmp: Path, plain: int, tls: int) -> str:
    """The shipped file with its paths, ports and user pointed at the test's own."""
    swaps = {
        "password_file /etc/mosquitto/hedgerow/passwd": f"password_file {broker_dir}/passwd",
        "acl_file /etc/mosquitto/hedgerow/acl": f"acl_file {broker_dir}/acl",
        "listener 8883": f"listener {tls} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {plain} 127.0.0.1",
        "certfile /etc/mosquitto/certs/hub.crt": f"certfile {pki}/server/127.0.0.1.crt",
        "keyfile /etc/mosquitto/certs/hub.key": f"keyfile {pki}/server/127.0.0.1.key",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {tmp}/",
    }
    lines = SHIPPED.read_text().splitlines()
    for old in swaps:
        assert old in lines, f"the shipped config no longer has {old!r}: update this test"
    leftover = [ln for ln in lines if "/etc/" in ln and ln not in swaps and not ln.startswith("#")]
    assert not leftover, f"shipped paths this test does not rewrite: {leftover}"
    return "\n".join([swaps.get(line, line) for line in lines] + ["user root", ""])


@dataclass
class Broker:
    """The running shipped broker and what a client needs to reach it."""

    tls: int
    plain: int
    ca: Path
    pki: Path
    devices: dict[str, str]  # device id -> broker password
    log: Path
    bundles: dict[str, Path]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    plain, tls = free_port(), free_port()
    hub = make_hub(tmp_path, f"mqtt://127.0.0.1:{plain}")
    config = hub.config.path
    (config.parent / "hub-mqtt.pass").write_text(HUB_PASSWORD + "\n")
    text = config.read_text().replace(
        "[mqtt]\n", f'[mqtt]\nusername = "{HUB_USER}"\npassword_file = "hub-mqtt.pass"\n', 1
    )
    config.write_text(text)
    cli("pki", "init", "--config", str(config))
    cli("pki", "issue", "--config", str(config), "server", "--name", "127.0.0.1")
    pki = hub.config.data / "pki"
    devices = {}
    for device in ("pupil-a", "pupil-b"):
        out = tmp_path / f"{device}.bundle"
        cli(
            "enroll", "bundle", "--config", str(config), "--device", device,
            "--class", "pupil-laptop", "--broker", f"mqtts://127.0.0.1:{tls}",
            "--ca", str(pki / "ca.crt"), "--out", str(out),
        )  # fmt: skip
        devices[device] = json.loads(out.read_text())["mqtt"]["password"]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(shipped_conf(pki, hub.config.data / "mosquitto", tmp_path, plain, tls))
    log = tmp_path / "mosquitto.log"
    proc = _spawn_mosquitto(conf, log)
    try:
        wait_port(plain)
        wait_port(tls)
        bundles = {d: tmp_path / f"{d}.bundle" for d in devices}
        yield Broker(tls, plain, pki / "ca.crt", pki, devices, log, bundles)
    finally:
        stop_process(proc)


class Client:
    """A raw MQTT 5 paho client over TLS that records CONNACK, PUBACK, SUBACK and messages."""

    def __init__(
        self,
        port: int,
        user: str | None,
        password: str | None,
        *,
        ca: Path,
        client_id: str = "",
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.connack: list[ReasonCode] = []
        self.ended: list[int] = []
        self.acks: dict[int, int] = {}
        self.granted: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        # Verifies the broker's chain against our CA and its SAN against the host we dial.
        certfile, keyfile = (str(cert[0]), str(cert[1])) if cert else (None, None)
        self.client.tls_set(
            ca_certs=str(ca), certfile=certfile, keyfile=keyfile, cert_reqs=ssl.CERT_REQUIRED
        )
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, reason, p: self.ended.append(reason.value)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, clean_start=False)
        self.client.loop_start()

    def _on_connect(self, c: Any, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        self.connack.append(reason)

    def _on_publish(self, c: Any, u: Any, mid: int, reason: ReasonCode, p: Any) -> None:
        with self.lock:
            self.acks[mid] = reason.value

    def _on_subscribe(self, c: Any, u: Any, mid: int, reasons: list[ReasonCode], p: Any) -> None:
        with self.lock:
            self.granted[mid] = [r.value for r in reasons]

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_connected(self) -> ReasonCode:
        wait_until(lambda: bool(self.connack), 10, what="a CONNACK")
        return self.connack[0]

    def connected(self) -> Client:
        reason = self.wait_connected()
        assert not reason.is_failure, f"refused: {reason}"
        return self

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        wait_until(lambda: mid in self.acks, 10, what=f"PUBACK for {topic}")
        return self.acks[mid]

    def subscribe(self, *topics: str) -> list[int]:
        """Subscribe at QoS 1 and return the SUBACK reason codes."""
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        assert mid is not None
        wait_until(lambda: mid in self.granted, 10, what=f"SUBACK for {topics}")
        return self.granted[mid]

    def got(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        close_sockets(self.client)  # loop_stop() leaves paho's socket pair open


@contextlib.contextmanager
def clients(*made: Client) -> Iterator[None]:
    try:
        yield
    finally:
        for c in made:
            c.close()


def topic(device: str, leaf: str) -> str:
    return f"hedgerow/v1/{SITE}/{device}/{leaf}"


def refused_connack(port: int, ca: Path, user: str | None, password: str | None) -> ReasonCode:
    """The CONNACK reason of one TLS connection attempt. The loop is run here, not in paho's
    thread, which would connect again and again after a refusal."""
    got: list[ReasonCode] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, reason, p: got.append(reason)
    client.connect("127.0.0.1", port)
    try:
        for _ in range(50):
            if got or client.loop(0.2) != paho.MQTT_ERR_SUCCESS:
                break
    finally:
        client.disconnect()
        close_sockets(client)
    assert got, "no CONNACK"
    return got[0]


def test_anonymous_and_wrong_passwords_are_refused_over_tls(broker: Broker) -> None:
    anonymous = refused_connack(broker.tls, broker.ca, None, None)
    assert anonymous.is_failure, anonymous
    wrong = refused_connack(broker.tls, broker.ca, "pupil-a", "not-its-password")
    assert wrong.is_failure, wrong
    # The hub's user name with a device's password is refused too.
    stolen = refused_connack(broker.tls, broker.ca, HUB_USER, broker.devices["pupil-a"])
    assert stolen.is_failure, stolen
    assert not refused_connack(
        broker.tls, broker.ca, "pupil-a", broker.devices["pupil-a"]
    ).is_failure


def test_plaintext_is_refused_on_the_tls_port(broker: Broker) -> None:
    # An MQTT 3.1.1 CONNECT in clear, with the device's real login: the broker wants a TLS
    # ClientHello, so it closes the connection and never sends a CONNACK (0x20).
    user, password = b"pupil-a", broker.devices["pupil-a"].encode()
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c" + b"\x00\x01x"
    body += len(user).to_bytes(2, "big") + user + len(password).to_bytes(2, "big") + password
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection(("127.0.0.1", broker.tls), timeout=10) as sock:
        sock.sendall(packet)
        try:
            answer = sock.recv(16)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"\x20"), answer


def test_a_client_refuses_a_broker_it_cannot_verify(broker: Broker, tmp_path: Path) -> None:
    # The checks paho's tls_set(ca_certs=..., cert_reqs=CERT_REQUIRED) makes, done with the
    # standard library so a refused handshake leaves no socket open.
    other = make_hub(tmp_path / "other")
    cli("pki", "init", "--config", str(other.config.path))
    foreign_ca = other.config.data / "pki" / "ca.crt"
    # Another school's CA; and the right CA but another host name (the certificate names
    # 127.0.0.1 only).
    for ca, host in ((foreign_ca, "127.0.0.1"), (broker.ca, "localhost")):
        context = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(("127.0.0.1", broker.tls), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            context.wrap_socket(raw, server_hostname=host).close()
    context = ssl.create_default_context(cafile=str(broker.ca))
    with (
        socket.create_connection(("127.0.0.1", broker.tls), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_devices_publish_only_under_their_own_topics_and_the_hub_reads_all(
    broker: Broker,
) -> None:
    hub = Client(broker.tls, HUB_USER, HUB_PASSWORD, ca=broker.ca, client_id=HUB_USER).connected()
    a = Client(broker.tls, "pupil-a", broker.devices["pupil-a"], ca=broker.ca).connected()
    b = Client(broker.tls, "pupil-b", broker.devices["pupil-b"], ca=broker.ca).connected()
    with clients(hub, a, b):
        assert hub.subscribe("hedgerow/v1/#") == [1]
        assert a.publish(topic("pupil-a", "summary"), b"a-own") == 0
        assert b.publish(topic("pupil-b", "heartbeat"), b"b-own") == 0
        for leaf in ("summary", "event", "heartbeat"):
            assert a.publish(topic("pupil-b", leaf), b"forged") == NOT_AUTHORIZED, leaf
        # Nor may a device write what only the hub writes.
        assert a.publish(topic("pupil-a", "policy"), b"forged") == NOT_AUTHORIZED
        assert a.publish("hedgerow/v1/hub/keys", b"forged") == NOT_AUTHORIZED
        # One client's messages arrive in order: once this one is in, a forged one would be too.
        assert a.publish(topic("pupil-a", "event"), b"a-last") == 0
        wait_until(lambda: hub.got(topic("pupil-a", "event")) == [b"a-last"], 10, what="a-last")
        assert hub.got(topic("pupil-a", "summary")) == [b"a-own"]
        assert hub.got(topic("pupil-b", "heartbeat")) == [b"b-own"]
        assert not [m for m in hub.messages if m[1] == b"forged"], hub.messages


def test_the_devices_own_link_verifies_the_broker_and_publishes(
    broker: Broker, tmp_path: Path
) -> None:
    # As on a laptop: the bundle is imported, the identity records the CA path given to
    # `enroll bundle --ca`, and the agent's MQTT link (agent/report/mqtt.py) uses it.
    identity = enroll_from_bundle(broker.bundles["pupil-a"], tmp_path / "identity-a")
    assert identity.mqtt.ca == str(broker.ca)
    assert identity.mqtt.url == f"mqtts://127.0.0.1:{broker.tls}"
    acks: dict[int, Ack] = {}
    states: list[LinkState] = []
    hub = Client(broker.tls, HUB_USER, HUB_PASSWORD, ca=broker.ca, client_id=HUB_USER).connected()
    link = MqttLink(
        identity.mqtt,
        identity.device,
        on_ack=lambda a: acks.update({a.token: a}),
        on_state=states.append,
    )
    with clients(hub):
        assert hub.subscribe("hedgerow/v1/#") == [1]
        link.start()
        try:
            wait_until(lambda: link.connected, 10, what="the device's TLS link up")
            own = link.publish(topic("pupil-a", "summary"), b"from-the-agent")
            forged = link.publish(topic("pupil-b", "summary"), b"forged")
            wait_until(lambda: own in acks and forged in acks, 10, what="both PUBACKs")
            assert acks[own].ok and not acks[forged].ok, acks
            assert "authori" in acks[forged].reason.lower(), acks[forged]
            wait_until(
                lambda: hub.got(topic("pupil-a", "summary")) == [b"from-the-agent"], 10, what="it"
            )
        finally:
            link.stop()
    assert hub.got(topic("pupil-b", "summary")) == []
    assert states and states[0].connected


def test_a_device_reads_only_its_own_policy(broker: Broker) -> None:
    hub = Client(broker.tls, HUB_USER, HUB_PASSWORD, ca=broker.ca, client_id=HUB_USER).connected()
    a = Client(broker.tls, "pupil-a", broker.devices["pupil-a"], ca=broker.ca).connected()
    with clients(hub, a):
        for device in ("pupil-a", "pupil-b"):
            # 0x10: accepted, no subscriber yet (kept as retained).
            assert hub.publish(topic(device, "policy"), device.encode(), retain=True) == 0x10
            assert hub.publish(topic(device, "receipt"), device.encode(), retain=True) == 0x10
        own = [topic("pupil-a", "policy"), topic("pupil-a", "receipt")]
        theirs = [topic("pupil-b", "policy"), topic("pupil-b", "receipt")]
        granted = a.subscribe(*theirs, *own)
        assert granted[2:] == [1, 1], granted
        # Mosquitto 2.0 grants a subscription its ACL denies and then delivers nothing on it.
        assert all(code in (1, NOT_AUTHORIZED) for code in granted[:2]), granted
        wait_until(lambda: all(a.got(t) for t in own), 10, what="a's own policy and receipt")
        # Live messages too: B's first, then A's; A's arriving means B's would have.
        assert hub.publish(theirs[0], b"live-b") == 0
        assert hub.publish(own[0], b"live-a") == 0
        wait_until(lambda: b"live-a" in a.got(own[0]), 10, what="a's live policy")
        assert not a.got(theirs[0]) and not a.got(theirs[1]), a.messages


def test_no_other_account_takes_over_the_hubs_session(broker: Broker) -> None:
    hub = Client(broker.tls, HUB_USER, HUB_PASSWORD, ca=broker.ca, client_id=HUB_USER).connected()
    with clients(hub):
        assert hub.subscribe("hedgerow/v1/#") == [1]
        # Each device asks for the hub's client id: the broker gives it its own user name.
        thieves = [
            Client(broker.tls, d, p, ca=broker.ca, client_id=HUB_USER).connected()
            for d, p in broker.devices.items()
        ]
        with clients(*thieves):
            assert thieves[0].publish(topic("pupil-a", "summary"), b"after") == 0
            wait_until(lambda: hub.got(topic("pupil-a", "summary")) == [b"after"], 10, what="after")
            assert hub.ended == [] and all(t.ended == [] for t in thieves)
    assert "already connected, closing old connection" not in broker.log.read_text()


def test_a_revoked_client_certificate_is_refused(broker: Broker, tmp_path: Path) -> None:
    # Not the shipped listener (it logs in by password): one that also requires a client
    # certificate and reads the CRL from `pki revoke`, as docs/pki.md describes.
    config = str(broker.pki.parent / "hub.toml")
    cli("pki", "issue", "--config", config, "client", "--device", "pupil-a")
    cli("pki", "issue", "--config", config, "client", "--device", "pupil-b")
    port = free_port()
    conf = tmp_path / "certs.conf"
    conf.write_text(
        "\n".join(
            [
                "per_listener_settings false",
                "allow_anonymous false",
                f"password_file {broker.pki.parent}/mosquitto/passwd",
                f"acl_file {broker.pki.parent}/mosquitto/acl",
                f"listener {port} 127.0.0.1",
                "use_username_as_clientid true",
                f"certfile {broker.pki}/server/127.0.0.1.crt",
                f"keyfile {broker.pki}/server/127.0.0.1.key",
                f"cafile {broker.ca}",
                f"crlfile {broker.pki}/crl.pem",
                "require_certificate true",
                "user root",
                "",
            ]
        )
    )
    proc = _spawn_mosquitto(conf, tmp_path / "certs.log")
    try:
        wait_port(port)
        certs = broker.pki / "clients"
        good = Client(
            port, "pupil-a", broker.devices["pupil-a"], ca=broker.ca,
            cert=(certs / "pupil-a.crt", certs / "pupil-a.key"),
        )  # fmt: skip
        before = Client(
            port, "pupil-b", broker.devices["pupil-b"], ca=broker.ca,
            cert=(certs / "pupil-b.crt", certs / "pupil-b.key"),
        )  # fmt: skip
        with clients(good, before):
            good.connected()
            before.connected()
        # Revoked while the broker runs: a reload (SIGHUP, as after any broker file change)
        # makes Mosquitto read the new CRL.
        out = cli("pki", "revoke", "--config", config, "pupil-b")
        assert "revoked client certificate pupil-b" in out
        log = tmp_path / "certs.log"
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "Reloading config" in log.read_text(), 10, what="the reload")
        again = Client(
            port, "pupil-a", broker.devices["pupil-a"], ca=broker.ca,
            cert=(certs / "pupil-a.crt", certs / "pupil-a.key"),
        )  # fmt: skip
        with clients(again):
            again.connected()
        revoked = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        revoked.tls_set(
            ca_certs=str(broker.ca),
            certfile=str(certs / "pupil-b.crt"),
            keyfile=str(certs / "pupil-b.key"),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        revoked.username_pw_set("pupil-b", broker.devices["pupil-b"])
        # TLS 1.3 reports a refused client certificate after the handshake, at the first read.
        try:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                revoked.connect("127.0.0.1", port)
                for _ in range(50):
                    if revoked.loop(0.2) != paho.MQTT_ERR_SUCCESS:
                        raise ConnectionError("the broker closed the connection")
        finally:
            close_sockets(revoked)
        wait_until(lambda: "certificate verify failed" in log.read_text(), 10, what="refusal")
    finally:
        stop_process(proc)
