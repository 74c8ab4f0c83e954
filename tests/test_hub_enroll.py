"""Online enrolment over a real Mosquitto: token outcomes, identity files, N-use tokens."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.enrolment_client import enroll_online
from agent.policy_client import accepted_versions, current_policy
from agent.report.session import MqttSession
from common.enrolment import EnrollError, EnrollRefused, EnrollToken
from common.identity import Identity, MqttCredentials
from common.wire.keyfile import b64
from hub.store.devices import get_device, list_devices
from tests.enroll_fixtures import DAY, SITE, T0, Hub, HubLoop, make_hub
from tests.services import Mosquitto
from tests.waiting import wait_until


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def enroll(
    broker: Mosquitto, directory: Path, token: str, device_class: str = "pupil-laptop"
) -> Identity:
    return enroll_online(
        directory,
        token=token,
        site=SITE,
        device_class=device_class,
        broker_url=broker.url,
        hostname="LAPTOP-17",
        timeout_s=15,
    )


@pytest.fixture
def hub(tmp_path: Path, broker: Mosquitto) -> Hub:
    return make_hub(tmp_path, broker.url)


def test_good_token_writes_an_identity(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    token = hub.token(group="pupils")
    with HubLoop(hub, broker.url):
        identity = enroll(broker, tmp_path / "id", token.text)
    loaded = Identity.load(tmp_path / "id")
    assert loaded.device == identity.device and loaded.site == SITE
    assert loaded.device.startswith("pupil-")
    assert loaded.group == "pupils"
    assert loaded.mqtt.username == loaded.device and loaded.mqtt.password
    assert loaded.mqtt.url == broker.url
    assert loaded.hub_key == hub.keys.sealing_key
    assert loaded.hub_verify_keys[0].public == hub.keys.signing.verify_key.public
    for name in ("device.json", "mqtt.json"):
        assert mode(tmp_path / "id" / name) == 0o600, name
    policy = current_policy(tmp_path / "id")
    assert policy is not None and policy.payload["document"]["group"] == "pupils"
    assert accepted_versions(tmp_path / "id")["device"] == policy.version
    db = hub.db()
    try:
        row = get_device(db, SITE, loaded.device)
        assert row is not None and row.verify_key == loaded.key.public
        assert row.hostname == "LAPTOP-17" and row.device_class == "pupil-laptop"
        stored = db.execute("SELECT mqtt_secret_hash, uses_left FROM devices, enroll_tokens")
        assert stored[0][0].startswith("$7$") and loaded.mqtt.password not in stored[0][0]
        assert stored[0][1] == 0
    finally:
        db.close()


def test_spent_token_is_refused_with_a_reason(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    token = hub.token()
    with HubLoop(hub, broker.url):
        enroll(broker, tmp_path / "a", token.text)
        with pytest.raises(EnrollRefused) as info:
            enroll(broker, tmp_path / "b", token.text)
    assert info.value.reason == "spent"
    assert not (tmp_path / "b" / "device.json").exists()


def test_expired_token_is_refused(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    token = hub.token(expires_ms=T0 + DAY)
    with HubLoop(hub, broker.url, clock=lambda: T0 + DAY + 1), pytest.raises(EnrollRefused) as info:
        enroll(broker, tmp_path / "id", token.text)
    assert info.value.reason == "expired"


def test_forged_token_is_refused(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    real = hub.token()
    forged = EnrollToken(real.fingerprint, "A" * 16)  # right hub, made-up secret
    with HubLoop(hub, broker.url), pytest.raises(EnrollRefused) as info:
        enroll(broker, tmp_path / "id", forged.text)
    assert info.value.reason == "unknown_token"


def test_token_for_another_hub_is_caught_by_the_device(
    tmp_path: Path, broker: Mosquitto, hub: Hub
) -> None:
    other = make_hub(tmp_path / "other", broker.url).token()
    with HubLoop(hub, broker.url) as loop, pytest.raises(EnrollError, match="fingerprint"):
        enroll(broker, tmp_path / "id", other.text)
    assert loop.answered == 0  # the device never sent its request


def test_wrong_class_is_refused(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    token = hub.token("staff-laptop", group="staff")
    with HubLoop(hub, broker.url), pytest.raises(EnrollRefused) as info:
        enroll(broker, tmp_path / "id", token.text, "pupil-laptop")
    assert info.value.reason == "wrong_class"


def test_n_use_token(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    token = hub.token("staff-laptop", uses=3, group="staff")
    with HubLoop(hub, broker.url):
        ids = {
            enroll(broker, tmp_path / f"d{i}", token.text, "staff-laptop").device for i in range(3)
        }
        with pytest.raises(EnrollRefused) as info:
            enroll(broker, tmp_path / "d4", token.text, "staff-laptop")
    assert len(ids) == 3 and info.value.reason == "spent"
    db = hub.db()
    try:
        devices = list_devices(db, SITE)
    finally:
        db.close()
    assert {d.device for d in devices} == ids
    assert all(d.counts_only for d in devices)  # staff laptops report counts only


def test_sinkhole_enrolment_registers_its_beacon_key(
    tmp_path: Path, broker: Mosquitto, hub: Hub
) -> None:
    token = hub.token("sinkhole", group=None)
    with HubLoop(hub, broker.url):
        identity = enroll(broker, tmp_path / "pi", token.text, "sinkhole")
    assert identity.device.startswith("dns-") and identity.beacon_key is not None
    assert mode(tmp_path / "pi" / "beacon.json") == 0o600
    db = hub.db()
    try:
        row = get_device(db, SITE, identity.device)
    finally:
        db.close()
    assert row is not None and row.beacon_key == identity.beacon_key.public
    policy = current_policy(tmp_path / "pi")
    assert policy is not None
    assert policy.payload["document"]["beacon_keys"] == [b64(identity.beacon_key.public)]


def test_already_enrolled_directory_is_refused(tmp_path: Path, broker: Mosquitto, hub: Hub) -> None:
    with HubLoop(hub, broker.url):
        enroll(broker, tmp_path / "id", hub.token().text)
        with pytest.raises(EnrollError, match="already enrolled"):
            enroll(broker, tmp_path / "id", hub.token().text)


def test_garbage_request_is_counted_not_answered(broker: Mosquitto, hub: Hub) -> None:
    with HubLoop(hub, broker.url) as loop:
        session = MqttSession(MqttCredentials(broker.url), "garbage")
        session.connect(10)
        try:
            session.publish(
                "hedgerow/v1/enroll/enroll-x/request", b"HW\x01junk", retain=False, timeout_s=10
            )
        finally:
            session.close()
        wait_until(lambda: loop.rejected, 10, what="the garbage request rejected")
    assert loop.rejected == ["malformed"] and loop.answered == 0
