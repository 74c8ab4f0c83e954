"""The shipped Mosquitto configuration (firmware-config/mosquitto/hedgerow.conf) against the
hub: no login can take over another's session, concurrent enrolments do not collide, a
takeover of the hub's own session raises a security alert, and nothing retained stays on
request topics.

The broker runs the shipped file itself: only its paths, ports and the user it runs as are
rewritten for the test (mechanically, line by line; nothing is added but `user root`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.enrolment_client import enroll_online
from agent.report.mqtt import close_sockets
from common.enrolment import EnrollToken
from common.identity import Identity
from hub.cli import main as hub_main
from hub.config import load_config
from hub.daemon import HubService
from tests.enroll_fixtures import SITE, make_hub
from tests.hub_ingest_fixtures import query
from tests.services import Mosquitto, _spawn_mosquitto, free_port, wait_port
from tests.test_hub_notify_tls import make_cert
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "firmware-config" / "mosquitto" / "hedgerow.conf"
HUB_PASSWORD = "hub-broker-password-for-tests"


def shipped_conf(tmp: Path, broker_dir: Path, plain: int, tls: int) -> str:
    """The shipped file with its paths and ports pointed at the test's own."""
    cert, key = make_cert(tmp)
    swaps = {
        "password_file /etc/mosquitto/hedgerow/passwd": f"password_file {broker_dir}/passwd",
        "acl_file /etc/mosquitto/hedgerow/acl": f"acl_file {broker_dir}/acl",
        "listener 8883": f"listener {tls} 127.0.0.1",
        "listener 1883 127.0.0.1": f"listener {plain} 127.0.0.1",
        "certfile /etc/mosquitto/certs/hub.crt": f"certfile {cert}",
        "keyfile /etc/mosquitto/certs/hub.key": f"keyfile {key}",
        "persistence_location /var/lib/mosquitto/": f"persistence_location {tmp}/",
    }
    lines = SHIPPED.read_text().splitlines()
    for old in swaps:
        assert old in lines, f"the shipped config no longer has {old!r}: update this test"
    assert sum(line == "use_username_as_clientid true" for line in lines) == 2
    return "\n".join([swaps.get(line, line) for line in lines] + ["user root", ""])


@dataclass
class School:
    hub: Any
    broker: Mosquitto
    tls_url: str
    ca: Path

    def token(self, uses: int = 1) -> EnrollToken:
        args = ["enroll-token", "create", "--config", str(self.hub.config.path)]
        out = _run_cli([*args, "--class", "pupil-laptop", "--uses", str(uses)])
        return EnrollToken.parse(out.splitlines()[0])


def _run_cli(argv: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert hub_main(argv) == 0, buffer.getvalue()
    return buffer.getvalue()


@contextmanager
def school(tmp_path: Path) -> Iterator[School]:
    plain, tls = free_port(), free_port()
    hub = make_hub(tmp_path, f"mqtt://127.0.0.1:{plain}")
    (hub.config.path.parent / "hub-mqtt.pass").write_text(HUB_PASSWORD + "\n")
    text = hub.config.path.read_text().replace(
        "[mqtt]\n", '[mqtt]\nusername = "hedgerow-hub"\npassword_file = "hub-mqtt.pass"\n', 1
    )
    hub.config.path.write_text(text)
    _run_cli(["enroll", "broker-files", "--config", str(hub.config.path)])
    broker_dir = hub.config.data / "mosquitto"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(shipped_conf(tmp_path, broker_dir, plain, tls))
    log = tmp_path / "mosquitto.log"
    broker = Mosquitto(plain, _spawn_mosquitto(conf, log), conf, log)
    try:
        wait_port(plain)
        wait_port(tls)
        reload = [sys.executable, "-c", f"import os; os.kill({broker.proc.pid}, 1)"]
        with open(hub.config.path, "a", encoding="utf-8") as handle:
            handle.write(f"\n[enroll]\nbroker_reload = {reload!r}\n".replace("'", '"'))
            handle.write(f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n')
        hub.config = load_config(hub.config.path)
        yield School(hub, broker, f"mqtts://127.0.0.1:{tls}", tmp_path / "smtp.pem")
    finally:
        broker.stop()


class Client:
    """A raw paho client that records how its connections ended."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.ended: list[int] = []
        self.up = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, reason, p: (
            self.up.set() if not reason.is_failure else None
        )
        self.client.on_disconnect = lambda c, u, f, reason, p: self.ended.append(reason.value)
        self.client.connect("127.0.0.1", port, clean_start=False)
        self.client.loop_start()
        wait_until(self.up.is_set, 10, what=f"{user} connected")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        close_sockets(self.client)  # paho leaves its wake-up socket pair open


def enrol(school: School, token: EnrollToken, name: str, tmp: Path) -> Identity:
    return enroll_online(
        tmp / name,
        token=token.text,
        site=SITE,
        broker_url=school.tls_url,
        ca=str(school.ca),
        timeout_s=60,
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[School, HubService]]:
    with school(tmp_path) as s:
        service = HubService(s.hub.config)
        service.start()
        try:
            assert service.wait_ready(30)
            yield s, service
        finally:
            service.stop()


def test_no_login_takes_over_the_hub_or_a_device(
    running: tuple[School, HubService], tmp_path: Path
) -> None:
    school, service = running
    token = school.token(uses=3)
    first = enrol(school, token, "lt-1", tmp_path)
    device = Client(school.broker.port, first.device, str(first.mqtt.password), first.device)
    intruders = [
        Client(school.broker.port, *token.login, client_id="hedgerow-hub"),
        Client(school.broker.port, *token.login, client_id=first.device),
    ]
    try:
        # The hub still answers (its session is its own), and the device was never kicked.
        second = enrol(school, token, "lt-2", tmp_path)
        assert second.device != first.device
        assert device.ended == [] and device.up.is_set()
    finally:
        for c in (device, *intruders):
            c.close()
    assert service.connection is not None and service.connection.takeovers == 0
    assert query(school.hub.config, "SELECT COUNT(*) FROM alerts WHERE rule = 'security'") == [
        (0,)
    ]


def test_concurrent_enrolments_do_not_collide(
    running: tuple[School, HubService], tmp_path: Path
) -> None:
    school, _ = running
    shared = school.token(uses=3)  # three laptops at once on one token: one broker login
    own = school.token()
    done: dict[str, Identity | BaseException] = {}

    def one(name: str, token: EnrollToken) -> None:
        try:
            done[name] = enrol(school, token, name, tmp_path)
        except BaseException as exc:  # reported below
            done[name] = exc

    jobs = [("a", shared), ("b", shared), ("c", shared), ("d", own)]
    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed = {k: v for k, v in done.items() if not isinstance(v, Identity)}
    assert not failed and len(done) == 4, failed
    devices = {v.device for v in done.values() if isinstance(v, Identity)}
    assert len(devices) == 4


def test_a_takeover_of_the_hubs_session_is_a_security_alert(
    running: tuple[School, HubService],
) -> None:
    school, service = running
    thief = Client(school.broker.port, "hedgerow-hub", HUB_PASSWORD, "anything")
    try:

        def alerted() -> bool:
            rows = query(
                school.hub.config,
                "SELECT severity, summary FROM alerts WHERE rule = 'security' "
                "AND dedup_key = 'session_taken_over'",
            )
            return bool(rows)

        wait_until(alerted, 30, what="a session_taken_over security alert")
    finally:
        thief.close()
    assert service.connection is not None and service.connection.takeovers >= 1


def test_retained_requests_do_not_stay(running: tuple[School, HubService]) -> None:
    school, service = running
    token = school.token()
    junk = Client(school.broker.port, *token.login, client_id="junk")
    topic = "hedgerow/v1/enroll/enroll-junk/request"
    try:
        junk.client.publish(topic, b"not a request", qos=1, retain=True).wait_for_publish(10)
        assert service.connection is not None
        connection = service.connection
        wait_until(lambda: connection.cleared_retained >= 1, 30, what="the retained junk cleared")
    finally:
        junk.close()
    seen: list[tuple[str, bytes]] = []
    got = threading.Event()
    reader = paho.Client(CallbackAPIVersion.VERSION2, client_id="reader", protocol=paho.MQTTv5)
    reader.username_pw_set("hedgerow-hub-cli", HUB_PASSWORD)

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        seen.append((msg.topic, bytes(msg.payload)))
        got.set()

    reader.on_message = on_message
    reader.connect("127.0.0.1", school.broker.port)
    reader.loop_start()
    try:
        sentinel = "hedgerow/v1/test/sentinel/policy"
        reader.publish(sentinel, b"here", qos=1, retain=True).wait_for_publish(10)
        reader.subscribe(topic, qos=1)
        reader.subscribe(sentinel, qos=1)
        wait_until(got.is_set, 10, what="the sentinel retained message")
    finally:
        reader.disconnect()
        reader.loop_stop()
    assert seen[0] == (sentinel, b"here"), seen  # nothing retained on the request topic
