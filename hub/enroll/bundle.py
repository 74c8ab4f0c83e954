"""Offline enrolment bundles for devices that cannot reach the hub yet.

The hub generates the device's keys (and a sinkhole's beacon key), registers the device as
online enrolment would, and writes one JSON file, mode 0600, that the device imports with
agent.enrolment_client.enroll_from_bundle. It holds private keys and the MQTT password: move it on
encrypted media and delete every copy once imported (docs/enrolment.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.enrolment import BUNDLE_TYPE
from common.identity import hub_document
from common.wire.keyfile import b64, write_json
from common.wire.signing import SigningKey
from hub.config import HubConfig
from hub.enroll.broker import BrokerFiles, write_broker_files
from hub.enroll.registry import register
from hub.errors import HubError
from hub.keys import HubKeys
from hub.pki.paths import pki_paths
from hub.store import Database


@dataclass(frozen=True, slots=True)
class WrittenBundle:
    """The bundle file, and the broker files rewritten with the device's account."""

    path: Path
    broker: BrokerFiles


def make_bundle(
    db: Database,
    keys: HubKeys,
    config: HubConfig,
    *,
    site: str,
    device: str,
    device_class: str,
    group: str | None,
    broker_url: str,
    out: Path,
    now_ms: int,
    ca: str | None = None,
) -> WrittenBundle:
    """Register the device, write its bundle to `out` (refuses to overwrite a file) and
    rewrite the broker files, all or nothing: if any step fails the device is not registered
    and no bundle is left behind."""
    out = Path(out)
    if out.exists():
        raise HubError(f"{out} exists; refusing to overwrite it")
    key = SigningKey.generate()
    beacon = SigningKey.generate() if device_class == "sinkhole" else None
    with db.transaction():
        reg = register(
            db,
            keys,
            config,
            site=site,
            device=device,
            device_class=device_class,
            group=group,
            verify_key=key.public,
            beacon_key=beacon.public if beacon else None,
            hostname=None,
            now_ms=now_ms,
        )
        document: dict[str, Any] = {
            "type": BUNDLE_TYPE,
            "v": 1,
            "site": site,
            "device": device,
            "class": device_class,
            "group": reg.info.group,
            "private": b64(key.private),
            "hub": hub_document(keys.sealing_key, (keys.signing.verify_key,)),
            "policy": b64(reg.policy),
            "mqtt": {
                "url": broker_url,
                "username": reg.mqtt_user,
                "password": reg.mqtt_password,
                "ca": ca,
            },
        }
        if beacon is not None:
            document["beacon_private"] = b64(beacon.private)
        ca_cert = pki_paths(config.data).ca_cert
        if ca_cert.exists():  # the device verifies the broker with it (docs/pki.md)
            document["mqtt"]["ca_pem"] = ca_cert.read_text(encoding="ascii")
        write_json(out, document, private=True, exclusive=True)
        try:
            broker = write_broker_files(db, config, now_ms=now_ms)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    return WrittenBundle(out, broker)
