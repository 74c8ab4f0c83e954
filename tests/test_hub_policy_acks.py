"""`hedgerow-hub policy publish` succeeds only when the broker has acknowledged every retained
message (it once disconnected before its QoS 1 acks arrived, lost some, and still printed
"published 11"). Against a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.enrolment_client import enroll_from_bundle
from agent.report.session import MqttSession
from common.identity import MqttCredentials
from hub.cli import main
from tests.enroll_fixtures import SITE, Hub, make_hub
from tests.services import mosquitto


def _enrol(tmp_path: Path, hub: Hub, device: str) -> None:
    out = tmp_path / f"{device}.bundle"
    args = ["enroll", "bundle", "--config", str(hub.config.path), "--device", device]
    assert main([*args, "--class", "pupil-laptop", "--group", "pupils", "--out", str(out)]) == 0
    enroll_from_bundle(out, tmp_path / device)


def _retained(url: str, want: int) -> dict[str, bytes]:
    """Every retained message under hedgerow/v1/ (reads until `want` arrived or 5 s pass)."""
    session = MqttSession(MqttCredentials(url), "retained-reader")
    session.connect(10)
    got: dict[str, bytes] = {}
    try:
        session.subscribe("hedgerow/v1/#", 10)
        while len(got) < want:
            message = session.receive(5)
            if message is None:
                break
            got[message.topic] = message.payload
    finally:
        session.close()
    return got


def test_every_message_of_every_publish_is_on_the_broker(tmp_path: Path) -> None:
    """keys rotate; policy publish, repeatedly, with ten devices: each run's 12 messages are
    all retained at the broker when the command returns 0."""
    with mosquitto() as broker:
        hub = make_hub(tmp_path, broker.url)
        for i in range(10):
            _enrol(tmp_path, hub, f"lt-{i}")
        for _ in range(4):
            assert main(["keys", "rotate", "--config", str(hub.config.path)]) == 0
            assert main(["policy", "publish", "--config", str(hub.config.path)]) == 0
            got = _retained(broker.url, 12)
            assert len(got) == 12, sorted(got)


def test_a_refused_message_makes_publish_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker whose ACL refuses one device's policy topic: exit 1, naming the topic."""
    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite hedgerow/v1/hub/keys\n"
        f"topic readwrite hedgerow/v1/{SITE}/policy\n"
        f"topic readwrite hedgerow/v1/{SITE}/lt-0/policy\n"
    )
    with mosquitto(f"acl_file {acl}") as broker:
        hub = make_hub(tmp_path, broker.url)
        _enrol(tmp_path, hub, "lt-0")
        _enrol(tmp_path, hub, "lt-1")
        assert main(["policy", "publish", "--config", str(hub.config.path)]) == 1
    err = capsys.readouterr().err
    assert "only 3 of 4 retained messages reached the broker" in err
    assert f"hedgerow/v1/{SITE}/lt-1/policy: refused" in err


def test_a_broker_that_never_acknowledges_makes_publish_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker stops right after the command connected: nothing is acknowledged."""
    from hub import broker_session
    from hub.commands import policy

    monkeypatch.setattr(broker_session, "ACK_TIMEOUT_S", 3.0)
    with mosquitto() as broker:
        hub = make_hub(tmp_path, broker.url)
        from hub.policy.publish import publish_all as original

        def publish_then_lose_the_broker(*args: object, **kwargs: object) -> int:
            broker.stop()
            return original(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(policy, "publish_all", publish_then_lose_the_broker)
        assert main(["policy", "publish", "--config", str(hub.config.path)]) == 1
    err = capsys.readouterr().err
    assert "only 0 of 2 retained messages reached the broker" in err
    assert "not acknowledged within 3 s" in err


def test_revoke_removes_the_devices_retained_policy_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not at the next publish: the broker holds no policy of a revoked device once
    `hedgerow-hub revoke` returns, and the others' stay."""
    with mosquitto() as broker:
        hub = make_hub(tmp_path, broker.url)
        _enrol(tmp_path, hub, "lt-0")
        _enrol(tmp_path, hub, "lt-1")
        assert main(["policy", "publish", "--config", str(hub.config.path)]) == 0
        before = _retained(broker.url, 4)
        assert f"hedgerow/v1/{SITE}/lt-1/policy" in before
        capsys.readouterr()
        assert main(["revoke", "--config", str(hub.config.path), "lt-1"]) == 0
        out = capsys.readouterr().out
        assert "its retained policy is removed from the broker" in out
        after = _retained(broker.url, 3)
    assert sorted(after) == sorted(t for t in before if t != f"hedgerow/v1/{SITE}/lt-1/policy")


def test_revoke_with_the_broker_down_still_revokes_and_says_what_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub import broker_session

    monkeypatch.setattr(broker_session, "REVOKE_TIMEOUT_S", 2.0)
    with mosquitto() as broker:
        hub = make_hub(tmp_path, broker.url)
        _enrol(tmp_path, hub, "lt-0")
    assert main(["revoke", "--config", str(hub.config.path), "lt-0"]) == 0
    captured = capsys.readouterr()
    assert "lt-0 revoked" in captured.out
    assert "warning: its retained policy is still on the broker" in captured.err
    assert "cannot reach the broker" in captured.err
    assert "'hedgerow-hub policy publish' or hub start removes it" in captured.err
