"""Signed, versioned policies: versions, device-side checks, beacon keys, publishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.enrolment_client import check_hub_keys, enroll_from_bundle
from agent.policy_client import accept_policy, accepted_versions
from agent.report.session import MqttSession
from common.enrolment import EnrollError, hub_fingerprint
from common.identity import Identity, MqttCredentials
from common.wire import OpenError, Reason, SigningKey, sign_message, topics
from common.wire.keyfile import b64
from hub.cli import main
from hub.errors import ConfigError
from hub.keys import HubKeys, add_hpke_key
from hub.policy.publish import device_policy, publish_all, site_policy
from hub.policy.settings import load_policy_settings
from hub.store.devices import get_device
from tests.enroll_fixtures import SITE, T0, Hub, make_hub
from tests.services import Mosquitto

STRICT_PUPILS = '[policy]\n[policy.groups.pupils]\nblock = ["adult", "gambling", "social"]\n'


def enrolled(tmp_path: Path, hub: Hub, device: str, device_class: str = "pupil-laptop") -> Path:
    out = tmp_path / f"{device}.bundle"
    group = ["--group", "pupils"] if device_class != "sinkhole" else []
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", device]
    assert main([*args, "--class", device_class, *group, "--out", str(out)]) == 0
    enroll_from_bundle(out, tmp_path / device)
    return tmp_path / device


def collect(hub: Hub, now_ms: int) -> dict[str, bytes]:
    sent: dict[str, bytes] = {}
    db = hub.db()
    try:
        publish_all(db, hub.keys, hub.config, lambda t, p, r: sent.__setitem__(t, p), now_ms=now_ms)
    finally:
        db.close()
    return sent


def test_version_changes_only_with_content(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    enrolled(tmp_path, hub, "lt-1")
    first = collect(hub, T0)
    again = collect(hub, T0 + 1000)
    del first[topics.hub_keys()], again[topics.hub_keys()]  # re-signed with the time each run
    assert again == first  # nothing changed: the same signed policies, same versions
    db = hub.db()
    try:
        before = site_policy(db, hub.keys, hub.config, SITE, T0)[0]
        (hub.config.data / "policy").mkdir()
        (hub.config.data / "policy" / f"{SITE}.toml").write_text(STRICT_PUPILS)
        after_site = collect(hub, T0 + 2000)
        v_site = site_policy(db, hub.keys, hub.config, SITE, T0 + 3000)[0]
        device = get_device(db, SITE, "lt-1")
        assert device is not None
        v_device = device_policy(db, hub.keys, hub.config, device, T0 + 3000)[0]
    finally:
        db.close()
    assert after_site[topics.site_policy(SITE)] != first[topics.site_policy(SITE)]
    assert v_site > before and v_device > before  # one counter per site, only ever up
    message = accept_policy(tmp_path / "lt-1", after_site[topics.device_policy(SITE, "lt-1")])
    assert message.payload["document"]["block"] == ["adult", "gambling", "social"]


def test_device_rejects_tampered_older_foreign_and_unsigned(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    directory = enrolled(tmp_path, hub, "lt-1")
    old = collect(hub, T0)[topics.device_policy(SITE, "lt-1")]
    (hub.config.data / "policy").mkdir()
    (hub.config.data / "policy" / f"{SITE}.toml").write_text(STRICT_PUPILS)
    new = collect(hub, T0 + 1)[topics.device_policy(SITE, "lt-1")]
    assert accept_policy(directory, new).version > accepted_versions(directory)["site"]
    assert accept_policy(directory, new).version == accepted_versions(directory)["device"]

    cases: list[tuple[bytes, Reason]] = []
    tampered = bytearray(new)
    tampered[-80] ^= 1
    cases.append((bytes(tampered), Reason.BAD_SIGNATURE))
    cases.append((old, Reason.REPLAY))
    doc = {"v": 1, "site": "mill-lane", "document": {}}
    other_site = sign_message(
        doc, site="mill-lane", device="", version=99, time_ms=T0, signer=hub.keys.signing
    )
    cases.append((other_site, Reason.UNKNOWN_DEVICE))
    doc = {"v": 1, "site": SITE, "document": {}}
    forged = sign_message(
        doc, site=SITE, device="", version=99, time_ms=T0, signer=SigningKey.generate()
    )
    cases.append((forged, Reason.WRONG_KEY))
    cases.append((b"not a policy at all", Reason.MALFORMED))
    for data, reason in cases:
        with pytest.raises(OpenError) as info:
            accept_policy(directory, data)
        assert info.value.reason is reason


def test_sinkhole_beacon_key_reaches_laptop_policies(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    laptop = enrolled(tmp_path, hub, "lt-1")
    pi = Identity.load(enrolled(tmp_path, hub, "dns-hall", "sinkhole"))
    assert pi.beacon_key is not None
    sent = collect(hub, T0)
    site = accept_policy(laptop, sent[topics.site_policy(SITE)])
    mine = accept_policy(laptop, sent[topics.device_policy(SITE, "lt-1")])
    for message in (site, mine):
        assert message.payload["document"]["beacon_keys"] == [b64(pi.beacon_key.public)]


def test_device_follows_a_rotated_hub_key(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    directory = enrolled(tmp_path, hub, "lt-1")
    add_hpke_key(hub.config.keys_dir, hub.config.suite)
    hub = Hub(hub.config, HubKeys(hub.config.keys_dir))
    sent = collect(hub, T0)
    accept_policy(directory, sent[topics.device_policy(SITE, "lt-1")])
    assert Identity.load(directory).hub_key == hub.keys.sealing_key
    sealing, verify = check_hub_keys(
        sent[topics.hub_keys()], hub_fingerprint(hub.keys.signing.verify_key)
    )
    assert sealing == hub.keys.sealing_key and verify[0].public == hub.keys.signing.public


def test_revoked_device_policy_is_cleared(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    enrolled(tmp_path, hub, "lt-1")
    db = hub.db()
    try:
        db.execute("UPDATE devices SET revoked_ms = ? WHERE device = 'lt-1'", (T0,))
    finally:
        db.close()
    assert collect(hub, T0)[topics.device_policy(SITE, "lt-1")] == b""


def test_policy_publish_command_over_mosquitto(tmp_path: Path, broker: Mosquitto) -> None:
    hub = make_hub(tmp_path, broker.url)
    enrolled(tmp_path, hub, "lt-1")
    assert main(["policy", "publish", "--config", str(hub.config.path)]) == 0
    session = MqttSession(MqttCredentials(broker.url), "late-reader")
    session.connect(10)
    got: dict[str, bytes] = {}
    try:
        session.subscribe("hedgerow/v1/#", 10)
        while len(got) < 3:
            message = session.receive(10)
            assert message is not None, f"retained messages missing, got {sorted(got)}"
            assert message.retained
            got[message.topic] = message.payload
    finally:
        session.close()
    assert set(got) == {
        topics.hub_keys(),
        topics.site_policy(SITE),
        topics.device_policy(SITE, "lt-1"),
    }
    accept_policy(tmp_path / "lt-1", got[topics.device_policy(SITE, "lt-1")])
    accept_policy(tmp_path / "lt-1", got[topics.site_policy(SITE)])
    check_hub_keys(got[topics.hub_keys()], hub_fingerprint(hub.keys.signing.verify_key))
    # The first publish signed new versions: who decided is kept beside them (the login).
    db = hub.db()
    try:
        rows = db.execute("SELECT decided_by, reason, how FROM policy_decisions")
        assert [(r[1], r[2]) for r in rows] == [("", "hedgerow-hub policy publish")]
        assert rows[0][0]  # the login running the test
        # A change with --by and --reason; a publish that changes nothing records nothing.
        with open(hub.config.path, "a", encoding="utf-8") as handle:
            handle.write("\n[policy.groups.pupils]\nblock = ['gambling']\n")
        args = ["policy", "publish", "--config", str(hub.config.path)]
        assert main([*args, "--by", "ms.jones", "--reason", "ticket 42"]) == 0
        assert main([*args, "--by", "mr.nobody"]) == 0
        rows = db.execute("SELECT decided_by, reason FROM policy_decisions ORDER BY id")
        assert [tuple(r) for r in rows][1:] == [("ms.jones", "ticket 42")]
    finally:
        db.close()


@pytest.mark.parametrize(
    "toml",
    [
        "[policy]\ncolour = 'red'\n",
        "[policy]\ndefault_group = 'nobody'\n",
        "[policy]\ncounts_only_classes = ['toaster']\n",
        "[policy.groups.pupils]\nblock = ['Not A Name']\n",
        "[policy.groups.pupils]\nallow = ['not a domain!']\n",
    ],
)
def test_policy_settings_are_strict(tmp_path: Path, toml: str) -> None:
    hub = make_hub(tmp_path, extra_toml=toml)
    with pytest.raises(ConfigError):
        load_policy_settings(hub.config, SITE)


def test_unknown_hub_keys_message_is_refused() -> None:
    with pytest.raises(EnrollError):
        check_hub_keys(b"HW\x01\x05junk", "AAAAAAAAAAAA")
