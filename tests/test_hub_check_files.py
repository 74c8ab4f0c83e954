"""hedgerow-hub check catches what serve would trip over later: a configured file that cannot
be read (a misspelt password_file used to pass), and warns when an alert would reach nobody."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import main
from hub.datadir import init_data_dir
from tests.enroll_fixtures import SITE

CONTACT = '[contacts.dsl]\nname = "DSL"\nwebhook = "http://127.0.0.1:9/hook"\n'


def _config(tmp_path: Path, extra: str) -> Path:
    config = init_data_dir(tmp_path / "hub", SITE)
    with open(config, "a", encoding="utf-8") as handle:
        handle.write("\n" + extra)
    return config


def _with_mqtt(config: Path, lines: str) -> None:
    text = config.read_text()
    assert "[mqtt]\n" in text
    config.write_text(text.replace("[mqtt]\n", "[mqtt]\n" + lines, 1))


def test_every_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(
        tmp_path,
        CONTACT + '[notify.smtp]\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "smtp-pasword"\n',
    )
    _with_mqtt(config, 'username = "hub"\npassword_file = "mqtt-pasword"\nca = "no-ca.pem"\n')
    assert main(["check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert '[mqtt] password_file = "' in err and "mqtt-pasword\": cannot be read" in err
    assert "[mqtt] ca = " in err
    assert "[notify.smtp] password_file = " in err
    assert "3 problem(s)" in err


def test_present_files_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, CONTACT)
    (config.parent / "mqtt-password").write_text("secret\n")
    _with_mqtt(config, 'username = "hub"\npassword_file = "mqtt-password"\n')
    assert main(["check", "--config", str(config)]) == 0
    assert "ok" in capsys.readouterr().out


def test_no_contact_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "")
    assert main(["check", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "warning: no [contacts.*] are configured" in err
