"""hedgerow-hub init, keys list/rotate and check: files, permissions, refusal to overwrite."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from common.wire import DeviceRecord, Kind, Opened, ReplayWindow, SigningKey, open_envelope, seal
from hub.cli import main
from hub.config import load_config
from hub.keys import HubKeys
from hub.store import Database
from tests.wire_fixtures import DEVICE, SITE, SUMMARY, Directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_keys_database_and_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "hub"
    assert main(["init", "--data", str(data), "--site", SITE]) == 0
    assert "created" in capsys.readouterr().out
    config = load_config(data / "hub.toml")
    assert config.site == SITE
    key_files = sorted((data / "keys").iterdir())
    assert {p.name for p in key_files} >= {"signing.json"}
    assert any(p.name.startswith("hpke-") for p in key_files)
    for path in key_files:
        assert mode(path) == 0o600, path
    assert mode(data / "keys") == 0o700
    assert mode(data / "hub.db") == 0o600
    db = Database(config.database_url)
    assert db.schema_version() >= 1
    assert db.execute("SELECT site FROM sites") == [(SITE,)]
    db.close()
    assert main(["check", "--config", str(data / "hub.toml")]) == 0


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "hub"
    assert main(["init", "--data", str(data)]) == 0
    before = {p.name: p.read_bytes() for p in (data / "keys").iterdir()}
    assert main(["init", "--data", str(data)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (data / "keys").iterdir()} == before


def test_rotate_keeps_old_keys_decrypting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "hub"
    main(["init", "--data", str(data), "--site", SITE])
    config = data / "hub.toml"
    old = HubKeys(data / "keys")
    device = SigningKey.generate()
    sealed_offline = seal(
        Kind.SUMMARY,
        SUMMARY,
        site=SITE,
        device=DEVICE,
        seq=1,
        time_ms=0,
        to=old.sealing_key,
        signer=device,
    )
    assert main(["keys", "rotate", "--config", str(config)]) == 0
    capsys.readouterr()
    new = HubKeys(data / "keys")
    assert new.current.key_id != old.current.key_id and len(new.all) == 2
    assert main(["keys", "list", "--config", str(config), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [k["current"] for k in listing["hpke"]].count(True) == 1
    directory = Directory({(SITE, DEVICE): DeviceRecord(device.verify_key)})
    opened = open_envelope(sealed_offline, devices=directory, keyring=new, replay=ReplayWindow())
    assert isinstance(opened, Opened)


def test_x25519_suite_option(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    assert main(["init", "--data", str(data), "--suite", "x25519"]) == 0
    assert len(HubKeys(data / "keys").sealing_key.public) == 32


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[hub]\nsite = "s"\nbogus = 1\n', "[hub] bogus"),
        ('[hub]\nsite = "Bad Site"\n', "[hub] site"),
        ('[hub]\nsite = "s"\n[mqtt]\nurl = "mqtt://10.0.0.1:1883"\n', "only on loopback"),
        ('[hub]\nsite = "s"\n[database]\nurl = "mysql://x"\n', "[database] url"),
        ("[hub\n", "not valid TOML"),
    ],
)
def test_check_names_section_key_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(text)
    assert main(["check", "--config", str(config)]) == 1
    assert needle in capsys.readouterr().err


def test_init_against_postgresql(tmp_path: Path, pg_url: str) -> None:
    assert (
        main(["init", "--data", str(tmp_path / "hub"), "--site", SITE, "--database", pg_url]) == 0
    )
    db = Database(pg_url)
    assert db.execute("SELECT site FROM sites") == [(SITE,)]
    db.close()
