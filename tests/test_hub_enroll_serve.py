"""End to end: a device enrols against the real `hedgerow-hub serve` service over Mosquitto."""

from __future__ import annotations

from pathlib import Path

from agent.enrolment_client import enroll_online
from agent.policy_client import current_policy
from common.identity import Identity
from hub.daemon import HubService
from tests.enroll_fixtures import SITE, make_hub
from tests.services import Mosquitto, free_port


def test_enrol_through_serve(tmp_path: Path, broker: Mosquitto) -> None:
    # serve as deployed, metrics endpoint included, but on a port of its own (not 9154)
    metrics = f'[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'
    hub = make_hub(tmp_path, broker.url, extra_toml=metrics)
    token = hub.token("sinkhole", group=None, expires_ms=2**62)
    service = HubService(hub.config)
    service.start()
    try:
        assert service.wait_ready(30)
        identity = enroll_online(
            tmp_path / "pi",
            token=token.text,
            site=SITE,
            device_class="sinkhole",
            broker_url=broker.url,
            timeout_s=30,
        )
    finally:
        service.stop()
    assert Identity.load(tmp_path / "pi").device == identity.device
    policy = current_policy(tmp_path / "pi")
    assert policy is not None and len(policy.payload["document"]["beacon_keys"]) == 1
