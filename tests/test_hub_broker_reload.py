"""[enroll] broker_reload against a real Mosquitto: after an enrolment the hub rewrites the broker
files and reloads the broker, so the new device can log in; after `hedgerow-hub revoke` the
device is refused (and its open session dropped) while others still connect. A reload command
that fails is logged and counted, and the enrolment or revocation stands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.enrolment_client import enroll_from_bundle, enroll_online
from agent.report.errors import LinkError
from agent.report.session import MqttSession
from common.identity import Identity, MqttCredentials
from hub.cli import main
from hub.config import load_config
from hub.daemon import HubService
from hub.enroll.reload import run_reload
from hub.store.devices import get_device
from tests.enroll_fixtures import SITE, Hub, make_hub
from tests.hub_ingest_fixtures import query
from tests.services import Mosquitto, mosquitto

HUB_PASSWORD = "hub-test-password"
FAILING = ["sh", "-c", "echo mosquitto is not here >&2; exit 3"]
NEVER = 2**62  # serve enrols on the real clock; the fixture's tokens default to a fixed day
NO_METRICS_PORT = '[metrics]\nlisten = ""\n'  # read the registry; leave port 9154 alone


def with_broker_account(hub: Hub) -> Hub:
    """hub.toml with the hub's own broker account ([mqtt] username and password_file)."""
    account = '[mqtt]\nusername = "hedgerow-hub"\npassword_file = "hub-mqtt.pass"\n'
    path = hub.config.path
    path.write_text(path.read_text().replace("[mqtt]\n", account, 1))
    (path.parent / "hub-mqtt.pass").write_text(HUB_PASSWORD + "\n")
    return Hub(load_config(path), hub.keys)


def point_at(hub: Hub, broker: Mosquitto, reload: list[str]) -> Hub:
    """hub.toml with the broker's URL and [enroll] broker_reload."""
    path = hub.config.path
    text = path.read_text().replace('"mqtt://127.0.0.1:1883"', f'"{broker.url}"', 1)
    path.write_text(f"{text}\n{NO_METRICS_PORT}[enroll]\nbroker_reload = {json.dumps(reload)}\n")
    return Hub(load_config(path), hub.keys)


def login(url: str, identity: Identity) -> MqttSession:
    session = MqttSession(MqttCredentials(url, identity.device, identity.mqtt.password), "t")
    session.connect(10)
    return session


def reloads(service: HubService, result: str) -> float:
    sample = service.metrics.registry.get_sample_value(
        "hedgerow_hub_broker_reloads_total", {"result": result}
    )
    return sample or 0.0


def bundle(hub: Hub, tmp_path: Path, device: str) -> Path:
    out = tmp_path / f"{device}.bundle"
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", device]
    assert main([*args, "--class", "staff-laptop", "--out", str(out)]) == 0
    return out


def test_broker_reload_opens_and_revoke_closes_a_devices_login(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = with_broker_account(make_hub(tmp_path))
    assert main(["enroll", "broker-files", "--config", str(hub.config.path)]) == 0
    files = hub.config.data / "mosquitto"
    auth = f"allow_anonymous false\npassword_file {files / 'passwd'}\nacl_file {files / 'acl'}\n"
    with mosquitto(extra_conf=auth) as broker:
        hup = ["kill", "-HUP", str(broker.proc.pid)]  # the Mosquitto this test started
        hub = point_at(hub, broker, hup)
        token = hub.token(expires_ms=NEVER)
        service = HubService(hub.config, opening_processes=1)
        service.start()
        try:
            assert service.wait_ready(30)  # the hub logs in with its own account
            pupil = enroll_online(
                tmp_path / "pupil",
                token=token.text,
                site=SITE,
                device_class="pupil-laptop",
                broker_url=broker.url,
                timeout_s=30,
            )
            assert reloads(service, "ok") == 1 and reloads(service, "failed") == 0
            capsys.readouterr()
            staff = enroll_from_bundle(bundle(hub, tmp_path, "lt-staff"), tmp_path / "staff")
            assert f"broker reloaded ({' '.join(hup)})" in capsys.readouterr().out

            live = login(broker.url, pupil)  # first try: the broker knew it before the reply
            login(broker.url, staff).close()

            assert main(["revoke", "--config", str(hub.config.path), pupil.device]) == 0
            out = capsys.readouterr().out
            assert f"{SITE}/{pupil.device} revoked" in out
            assert f"no account for {pupil.device}" in out
            assert f"broker reloaded ({' '.join(hup)})" in out
            with pytest.raises(LinkError, match="refused"):
                login(broker.url, pupil)
            with pytest.raises(LinkError):  # the broker dropped its open session at the reload
                live.publish(
                    f"hedgerow/v1/{SITE}/{pupil.device}/summary", b"x", retain=False, timeout_s=3
                )
            live.close()
            login(broker.url, staff).close()  # everyone else still gets in
            assert service.wait_ready(10) and service.healthy
        finally:
            service.stop()


def test_a_failing_reload_is_logged_and_counted_and_serve_still_enrols(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    reload = f"[enroll]\nbroker_reload = {json.dumps(FAILING)}\n"
    hub = make_hub(tmp_path, broker.url, NO_METRICS_PORT + reload)
    token = hub.token(expires_ms=NEVER)
    service = HubService(hub.config, opening_processes=1)
    service.start()
    try:
        assert service.wait_ready(30)
        with caplog.at_level(logging.ERROR, logger="hub.enroll.reload"):
            identity = enroll_online(
                tmp_path / "pupil",
                token=token.text,
                site=SITE,
                device_class="pupil-laptop",
                broker_url=broker.url,
                timeout_s=30,
            )
        assert reloads(service, "failed") == 1 and reloads(service, "ok") == 0
        assert service.healthy
    finally:
        service.stop()
    assert "exit status 3: mosquitto is not here" in caplog.text
    assert "Mosquitto keeps its old accounts" in caplog.text
    passwd = (hub.config.data / "mosquitto" / "passwd").read_text()
    assert f"\n{identity.device}:$7$" in passwd  # the account is written all the same
    db = hub.db()
    try:
        assert get_device(db, SITE, identity.device) is not None
    finally:
        db.close()


def test_a_failing_reload_does_not_undo_a_bundle_or_a_revocation(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hub import broker_session

    monkeypatch.setattr(broker_session, "REVOKE_TIMEOUT_S", 0.5)  # no broker here
    hub = make_hub(tmp_path, extra_toml=f"[enroll]\nbroker_reload = {json.dumps(FAILING)}\n")
    config = str(hub.config.path)
    passwd = hub.config.data / "mosquitto" / "passwd"
    with caplog.at_level(logging.ERROR, logger="hub.enroll.reload"):
        out = bundle(hub, tmp_path, "lt-1")
        assert out.exists() and "lt-1:$7$" in passwd.read_text()
        assert "broker NOT reloaded" in capsys.readouterr().out

        assert main(["revoke", "--config", config, "lt-1"]) == 0  # the revocation stands
        printed = capsys.readouterr().out
        assert f"{SITE}/lt-1 revoked" in printed and "broker NOT reloaded" in printed
        assert "lt-1" not in passwd.read_text()

        assert main(["enroll", "broker-files", "--config", config]) == 1  # its one job failed
    assert caplog.text.count("exit status 3: mosquitto is not here") == 3
    db = hub.db()
    try:
        device = get_device(db, SITE, "lt-1")
    finally:
        db.close()
    assert device is not None and device.revoked_ms is not None
    alerts = query(
        hub.config, "SELECT count, severity FROM alerts WHERE rule = 'security' "
        "AND dedup_key = 'broker_reload' AND status = 'open'",
    )  # fmt: skip
    assert alerts == [(3, 4)]  # one alert, bumped by each failed reload


RUNS: list[tuple[list[str], bool, str]] = [
    (["true"], True, "exit status 0"),
    (FAILING, False, "exit status 3: mosquitto is not here"),
    (["sh", "-c", "kill -TERM $$"], False, "killed by signal 15"),
    (["/nonexistent/hedgerow-reload"], False, "cannot run '/nonexistent/hedgerow-reload': "),
    (["no-such-program-hedgerow"], False, "cannot run 'no-such-program-hedgerow': "),
]


@pytest.mark.parametrize(("argv", "ok", "detail"), RUNS, ids=[" ".join(r[0]) for r in RUNS])
def test_reload_outcomes(argv: list[str], ok: bool, detail: str) -> None:
    outcome = run_reload(argv, timeout_s=30)
    assert outcome.ok is ok and outcome.command == tuple(argv)
    assert outcome.detail.startswith(detail)


def test_a_reload_that_hangs_is_killed_at_the_timeout() -> None:
    outcome = run_reload(["sleep", "60"], timeout_s=0.2)
    assert not outcome.ok and outcome.detail == "timed out after 0.2 s (killed)"
