"""Offline bundles and the enrolment CLI: a bundle gives the same identity as online enrolment."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.enrolment_client import enroll_from_bundle
from agent.policy_client import current_policy
from common.enrolment import EnrollError, EnrollToken, hub_fingerprint
from common.identity import Identity
from common.wire.keyfile import b64
from hub.cli import main
from hub.enroll.passwords import verify_password
from hub.store.devices import get_device
from tests.enroll_fixtures import SITE, make_hub


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def bundle(hub_config: Path, out: Path, device: str, device_class: str, *extra: str) -> int:
    return main(
        [
            "enroll", "bundle", "--config", str(hub_config), "--device", device,
            "--class", device_class, "--broker", "mqtts://broker.school:8883", "--out", str(out),
            *extra,
        ]
    )  # fmt: skip


def test_bundle_import_gives_a_working_identity(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    out = tmp_path / "lt-042.bundle"
    assert bundle(hub.config.path, out, "lt-042", "pupil-laptop", "--group", "pupils") == 0
    assert mode(out) == 0o600
    identity = enroll_from_bundle(out, tmp_path / "id")
    loaded = Identity.load(tmp_path / "id")
    assert (loaded.site, loaded.device, loaded.group) == (SITE, "lt-042", "pupils")
    assert loaded.key.public == identity.key.public
    assert loaded.mqtt.url == "mqtts://broker.school:8883" and loaded.mqtt.username == "lt-042"
    assert loaded.hub_key == hub.keys.sealing_key
    assert mode(tmp_path / "id" / "device.json") == 0o600
    assert mode(tmp_path / "id" / "mqtt.json") == 0o600
    policy = current_policy(tmp_path / "id")
    assert policy is not None and policy.payload["document"]["device"] == "lt-042"
    db = hub.db()
    try:
        row = get_device(db, SITE, "lt-042")
        secret = db.execute("SELECT mqtt_secret_hash FROM devices WHERE device = 'lt-042'")[0][0]
    finally:
        db.close()
    assert row is not None and row.verify_key == loaded.key.public
    assert loaded.mqtt.password is not None and verify_password(loaded.mqtt.password, secret)
    assert (hub.config.data / "mosquitto" / "passwd").read_text().count("lt-042:$7$") == 1


def test_sinkhole_bundle_carries_the_beacon_key(tmp_path: Path) -> None:
    hub = make_hub(tmp_path)
    out = tmp_path / "pi.bundle"
    assert bundle(hub.config.path, out, "dns-hall", "sinkhole") == 0
    identity = enroll_from_bundle(out, tmp_path / "pi")
    assert identity.beacon_key is not None
    assert mode(tmp_path / "pi" / "beacon.json") == 0o600
    db = hub.db()
    try:
        row = get_device(db, SITE, "dns-hall")
    finally:
        db.close()
    assert row is not None and row.beacon_key == identity.beacon_key.public
    policy = current_policy(tmp_path / "pi")
    assert policy is not None
    assert policy.payload["document"]["beacon_keys"] == [b64(identity.beacon_key.public)]


def test_bundle_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = make_hub(tmp_path)
    out = tmp_path / "a.bundle"
    assert bundle(hub.config.path, out, "lt-1", "pupil-laptop") == 0
    assert bundle(hub.config.path, tmp_path / "b.bundle", "lt-1", "pupil-laptop") == 1
    assert bundle(hub.config.path, out, "lt-2", "pupil-laptop") == 1  # will not overwrite
    assert bundle(hub.config.path, tmp_path / "c.bundle", "enroll", "pupil-laptop") == 1
    assert "already in use" in capsys.readouterr().err
    enroll_from_bundle(out, tmp_path / "id")
    with pytest.raises(EnrollError, match="already enrolled"):
        enroll_from_bundle(out, tmp_path / "id")
    broken = tmp_path / "broken.bundle"
    doc = json.loads(out.read_text())
    del doc["private"]
    broken.write_text(json.dumps(doc))
    with pytest.raises(EnrollError, match="incomplete"):
        enroll_from_bundle(broken, tmp_path / "id2")


def test_token_create_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = make_hub(tmp_path)
    args = ["enroll-token", "create", "--config", str(hub.config.path), "--class", "sinkhole"]
    assert main([*args, "--uses", "2", "--expires", "2h"]) == 0
    text = capsys.readouterr().out.splitlines()[0]
    token = EnrollToken.parse(text)
    assert token.fingerprint == hub_fingerprint(hub.keys.signing.verify_key)
    db = hub.db()
    try:
        rows = db.execute(
            "SELECT site, class, uses_left, expires_ms - created_ms FROM enroll_tokens"
        )
        assert text not in str(db.execute("SELECT * FROM enroll_tokens"))  # stored hashed only
    finally:
        db.close()
    assert rows == [(SITE, "sinkhole", 2, 7_200_000)]
    assert main([*args, "--expires", "forever"]) == 1


def test_enroll_arguments_for_the_device_clis(tmp_path: Path) -> None:
    import argparse

    from agent.enroll_args import add_enroll_arguments
    from agent.enrolment_client import enroll_from_args

    parser = argparse.ArgumentParser()
    add_enroll_arguments(parser, "sinkhole")
    hub = make_hub(tmp_path)
    out = tmp_path / "pi.bundle"
    assert bundle(hub.config.path, out, "dns-hall", "sinkhole") == 0
    identity = enroll_from_args(parser.parse_args(["--bundle", str(out)]), tmp_path / "pi")
    assert identity.device == "dns-hall" and identity.device_class == "sinkhole"
    with pytest.raises(EnrollError, match="needs --site"):
        enroll_from_args(parser.parse_args(["--token", "HW1-X"]), tmp_path / "other")
