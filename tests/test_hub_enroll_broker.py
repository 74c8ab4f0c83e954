"""Per-device broker accounts: mosquitto_passwd compatibility and the ACL in a real Mosquitto."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.enrolment_client import enroll_from_bundle
from agent.report.errors import LinkError
from agent.report.session import MqttSession
from common.enrolment import EnrollToken
from common.identity import Identity, MqttCredentials
from hub.cli import main
from hub.config import load_config
from hub.enroll.broker import render_acl, write_broker_files
from hub.enroll.passwords import hash_password, verify_password
from tests.enroll_fixtures import SITE, Hub, make_hub
from tests.services import mosquitto

HUB_PASSWORD = "hub-test-password"
ROOT = Path(__file__).resolve().parent.parent


def mosquitto_passwd() -> str:
    exe = shutil.which("mosquitto_passwd")
    assert exe, "mosquitto_passwd is not installed (make bootstrap)"
    return exe


def test_mosquitto_passwd_hashes_verify_here(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run([mosquitto_passwd(), "-b", str(path), "alice", "s3cret pass"], check=True)
    user, hashed = path.read_text().strip().split(":", 1)
    assert user == "alice" and hashed.startswith("$7$")
    assert verify_password("s3cret pass", hashed)
    assert not verify_password("s3cret", hashed)


def test_our_hash_format_matches_mosquitto_passwd(tmp_path: Path) -> None:
    ours = hash_password("pw", salt=b"\x01" * 12)
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run([mosquitto_passwd(), "-b", str(path), "bob", "pw"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    assert [len(p) for p in ours.split("$")] == [len(p) for p in theirs.split("$")]
    assert verify_password("pw", ours) and not verify_password("px", ours)


def test_acl_template_matches_the_shipped_example() -> None:
    example = (ROOT / "firmware-config" / "mosquitto" / "acl.example").read_text()
    acl = render_acl(["cape-primary"], hub_user="hedgerow-hub", token_users=["enroll-k3xq7m2abcde"])
    assert acl == example


def session(url: str, user: str, password: str | None, name: str) -> MqttSession:
    s = MqttSession(MqttCredentials(url, user, password), name)
    s.connect(10)
    return s


def test_generated_accounts_and_acl_in_a_real_mosquitto(tmp_path: Path) -> None:
    mqtt = '[mqtt]\nusername = "hedgerow-hub"\npassword_file = "hub-mqtt.pass"\n'
    hub = make_hub(tmp_path)
    text = hub.config.path.read_text().replace("[mqtt]\n", mqtt, 1)
    hub.config.path.write_text(text)
    (hub.config.path.parent / "hub-mqtt.pass").write_text(HUB_PASSWORD + "\n")
    hub = Hub(load_config(hub.config.path), hub.keys)
    identities = []
    for device in ("lt-1", "lt-2"):
        out = tmp_path / f"{device}.bundle"
        args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", device]
        assert main([*args, "--class", "pupil-laptop", "--out", str(out)]) == 0
        identities.append(enroll_from_bundle(out, tmp_path / device))
    token = hub.token(expires_ms=2**62)
    db = hub.db()
    try:
        files = write_broker_files(db, hub.config)
    finally:
        db.close()
    assert files.users == 5  # the hub and its commands, one token, two devices
    conf = f"allow_anonymous false\npassword_file {files.passwd}\nacl_file {files.acl}\n"
    with mosquitto(extra_conf=conf) as broker:
        check_broker(broker.url, identities, token)


def check_broker(url: str, identities: list[Identity], token: EnrollToken) -> None:
    one, two = identities
    hub = session(url, "hedgerow-hub", HUB_PASSWORD, "hub")
    dev = session(url, one.device, one.mqtt.password, one.device)
    enroller = session(url, *token.login, "enroller")
    try:
        hub.subscribe("hedgerow/v1/#", 10)
        own = f"hedgerow/v1/{SITE}/{one.device}/summary"
        other = f"hedgerow/v1/{SITE}/{two.device}/summary"
        dev.publish(own, b"mine", retain=False, timeout_s=10)
        with pytest.raises(LinkError, match="refused"):
            dev.publish(other, b"forged", retain=False, timeout_s=10)
        with pytest.raises(LinkError, match="refused"):
            enroller.publish(own, b"not yours", retain=False, timeout_s=10)
        enroller.publish(
            "hedgerow/v1/enroll/enroll-abc/request", b"req", retain=False, timeout_s=10
        )
        dev.publish(own, b"last", retain=False, timeout_s=10)
        seen: list[bytes] = []
        while not seen or seen[-1] != b"last":
            message = hub.receive(10)
            assert message is not None, f"hub saw only {seen}"
            seen.append(message.payload)
        assert seen == [b"mine", b"req", b"last"]  # nothing forged got through
    finally:
        for s in (hub, dev, enroller):
            s.close()
    with pytest.raises(LinkError, match="refused"):
        session(url, one.device, "wrong password", "intruder")
    with pytest.raises(LinkError, match="refused"):
        session(url, "nobody", None, "anonymous")
    with pytest.raises(LinkError, match="refused"):
        session(url, "enroll", "enroll", "the-old-shared-login")  # there is none now
