"""The device identity directory: written 0600, read back whole, errors that say what is wrong."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.laptop.cli import main as agent_main
from common.identity import Identity, IdentityError, MqttCredentials
from common.wire import OpeningKey, SigningKey


def make_identity(beacon: bool = False) -> Identity:
    return Identity(
        site="cape-primary",
        device="lt-042",
        device_class="sinkhole" if beacon else "pupil-laptop",
        group="pupils",
        key=SigningKey.generate(),
        hub_key=OpeningKey.generate().public_key,
        hub_verify_keys=(SigningKey.generate().verify_key,),
        mqtt=MqttCredentials("mqtt://127.0.0.1:1883", "lt-042", "secret"),
        beacon_key=SigningKey.generate() if beacon else None,
    )


def test_round_trip_and_permissions(tmp_path: Path) -> None:
    identity = make_identity(beacon=True)
    identity.save(tmp_path / "id")
    loaded = Identity.load(tmp_path / "id")
    assert loaded.key.private == identity.key.private
    assert loaded.hub_key == identity.hub_key
    assert loaded.beacon_key is not None and identity.beacon_key is not None
    assert loaded.beacon_key.private == identity.beacon_key.private
    for name in ("device.json", "beacon.json", "mqtt.json"):
        assert stat.S_IMODE((tmp_path / "id" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "id").stat().st_mode) == 0o700


def test_not_enrolled_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="not enrolled"):
        Identity.load(tmp_path)
    make_identity().save(tmp_path)
    (tmp_path / "hub.json").write_text('{"hpke": {}}')
    with pytest.raises(IdentityError, match="incomplete or corrupt"):
        Identity.load(tmp_path)


def test_agent_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_identity().save(tmp_path)
    assert agent_main(["show", "--identity", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["device"] == "lt-042" and "secret" not in json.dumps(shown)
    assert agent_main(["show", "--identity", str(tmp_path / "missing")]) == 1


def test_agent_enroll_from_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main as hub_main
    from tests.enroll_fixtures import make_hub

    hub = make_hub(tmp_path)
    out = tmp_path / "lt-7.bundle"
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", "lt-7"]
    assert hub_main([*args, "--class", "staff-laptop", "--out", str(out)]) == 0
    ident = tmp_path / "agent-id"
    assert agent_main(["enroll", "--identity", str(ident), "--bundle", str(out)]) == 0
    assert "enrolled as" in capsys.readouterr().out
    assert Identity.load(ident).device_class == "staff-laptop"
    # A second enrolment into the same directory is refused, not silently overwritten.
    assert agent_main(["enroll", "--identity", str(ident), "--bundle", str(out)]) == 1
