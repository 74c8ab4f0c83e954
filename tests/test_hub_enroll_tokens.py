"""Enrolment tokens as technicians use them: the printed command, list and revoke, per-token
broker logins, and the group coming from the token or the site, never from the device."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.enroll_args import add_enroll_arguments
from agent.enrolment_client import enroll_from_args
from common.enrolment import EnrollRefused, EnrollToken
from hub.cli import main
from hub.enroll.answer import EnrollService
from hub.enroll.broker import check_acl, check_passwd, render_acl
from hub.errors import HubError
from hub.store.devices import list_devices
from tests.enroll_fixtures import SITE, T0, HubLoop, enroll_direct, make_hub
from tests.services import Mosquitto

POLICY = """
[policy]
default_group = "juniors"

[policy.groups.juniors]
block = ["adult", "gambling", "social"]

[policy.groups.seniors]
block = ["adult", "gambling"]

[policy.groups.staff]
block = ["malware"]
"""


def _create(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[str, str]:
    assert main(["enroll-token", "create", "--config", str(config), *extra]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0], out


def test_create_prints_the_command_for_its_class(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "mqtts://hub.cape.example:8883"
    hub = make_hub(tmp_path, extra_toml=f'[enroll]\ndevice_broker_url = "{url}"\n')
    config = hub.config.path
    token, out = _create(config, capsys, "--class", "pupil-laptop")
    line = next(x for x in out.splitlines() if x.startswith("# on the device:"))
    assert f"hedgerow-agent enroll --site {SITE} --broker {url} --token {token}" in line
    assert "--class" not in line and "--ca " in line  # the token fixes the class
    token, out = _create(config, capsys, "--class", "sinkhole")
    line = next(x for x in out.splitlines() if x.startswith("# on the device:"))
    assert "hedgerow-dns enroll --config " in line and f"--token {token}" in line
    assert f"id {EnrollToken.parse(token).token_id}" in out


def test_a_group_the_site_does_not_define_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(tmp_path, extra_toml=POLICY)
    args = ["enroll-token", "create", "--config", str(hub.config.path), "--class", "pupil-laptop"]
    assert main([*args, "--group", "staf"]) != 0
    err = capsys.readouterr().err
    assert "group 'staf' is not defined" in err and "juniors, seniors, staff" in err
    assert main([*args, "--group", "seniors"]) == 0


def test_list_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub = make_hub(tmp_path)
    config = str(hub.config.path)
    token, _ = _create(hub.config.path, capsys, "--class", "pupil-laptop", "--uses", "5")
    parsed = EnrollToken.parse(token)
    passwd = hub.config.data / "mosquitto" / "passwd"
    assert f"{parsed.login[0]}:$7$" in passwd.read_text()  # its broker login exists now
    assert main(["enroll-token", "list", "--config", config]) == 0
    listing = capsys.readouterr().out
    assert parsed.token_id in listing and "usable" in listing and token not in listing
    assert main(["enroll-token", "revoke", "--config", config, parsed.token_id]) == 0
    assert f"revoked token {parsed.token_id}" in capsys.readouterr().out
    assert parsed.login[0] not in passwd.read_text()  # and its login is gone
    assert main(["enroll-token", "list", "--config", config]) == 0
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(EnrollRefused) as info:
        enroll_direct(hub, EnrollService(hub.config, hub.keys), parsed, now_ms=T0)
    assert info.value.reason == "revoked"
    assert main(["enroll-token", "revoke", "--config", config, "nosuchtoken1"]) != 0
    assert "no token with id" in capsys.readouterr().err


def test_the_group_comes_from_the_token_or_the_site_never_the_device(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, extra_toml=POLICY)
    service = EnrollService(hub.config, hub.keys)
    pupil = hub.token("pupil-laptop", group=None, uses=5)
    identity, _ = enroll_direct(hub, service, pupil)
    assert identity.group == "juniors"  # the site's default group
    staff = hub.token("staff-laptop", group=None)
    identity, _ = enroll_direct(hub, service, staff, device_class="staff-laptop")
    assert identity.group == "staff"  # the site's group for staff laptops
    with pytest.raises(EnrollRefused) as info:  # a pupil laptop asking to be staff
        enroll_direct(hub, service, pupil, group="staff")
    assert info.value.reason == "wrong_group"
    seniors = hub.token("pupil-laptop", group="seniors")
    (hub.config.data / "policy").mkdir(exist_ok=True)
    (hub.config.data / "policy" / f"{SITE}.toml").write_text(
        POLICY.replace("[policy.groups.seniors]", "[policy.groups.sixth]")
    )
    with pytest.raises(EnrollRefused) as info:  # the token's group is gone from the policy
        enroll_direct(hub, service, seniors)
    assert info.value.reason == "unknown_group"
    db = hub.db()
    try:
        assert sorted(d.group or "" for d in list_devices(db)) == ["juniors", "staff"]
    finally:
        db.close()


def test_bundle_for_an_undefined_group_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(tmp_path, extra_toml=POLICY)
    out = tmp_path / "lt.bundle"
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", "lt-1"]
    assert main([*args, "--class", "pupil-laptop", "--group", "nope", "--out", str(out)]) != 0
    assert "group 'nope' is not defined" in capsys.readouterr().err
    assert not out.exists()
    (hub.config.data / "mosquitto").rmdir() if (hub.config.data / "mosquitto").exists() else None
    (hub.config.data / "mosquitto").write_text("a file where the broker directory goes")
    assert main([*args, "--class", "pupil-laptop", "--out", str(out)]) != 0
    assert "cannot make the broker files' directory" in capsys.readouterr().err
    assert not out.exists()
    db = hub.db()
    try:
        assert list_devices(db) == []  # refused twice, registered nothing
    finally:
        db.close()


def test_the_laptop_agent_enrols_without_a_class(tmp_path: Path, broker: Mosquitto) -> None:
    hub = make_hub(tmp_path, broker.url)
    token = hub.token("staff-laptop", group=None)
    parser = argparse.ArgumentParser()
    add_enroll_arguments(parser, default_class=None)
    args = parser.parse_args(["--token", token.text, "--site", SITE, "--broker", broker.url])
    with HubLoop(hub, broker.url):
        identity = enroll_from_args(args, tmp_path / "laptop")
    assert identity.device_class == "staff-laptop" and identity.group == "staff"


def test_the_broker_files_are_checked_line_by_line() -> None:
    good = render_acl(["cape-primary"], hub_user="hedgerow-hub", token_users=["enroll-abc"])
    check_acl(good)
    for bad in ["user cape\ntopic readwrite #", "pattern write hedgerow/v1/#\x00", "topic # #"]:
        with pytest.raises(HubError, match="ACL line"):
            check_acl(good + bad + "\n")
    with pytest.raises(HubError):
        render_acl(["cape-primary"], hub_user="hedgerow-hub", token_users=["enroll-a\nuser x"])
    with pytest.raises(HubError, match="password file"):
        check_passwd("cape\n:$7$101$AAAA$BBBB\n")
    with pytest.raises(HubError, match="twice"):
        line = "a:$7$101$" + "A" * 16 + "$" + "B" * 86 + "==\n"
        check_passwd(line + line)
