"""Sign and publish, retained: the hub's public keys, each site's policy and each device's.

hedgerow/v1/hub/keys              hub-signed public keys (devices check them before enrolling)
hedgerow/v1/<site>/policy         the site policy
hedgerow/v1/<site>/<device>/policy  one device's policy (cleared when the device is revoked)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.enrolment import HUB_KEYS_SITE
from common.identity import hub_document
from common.wire import topics
from common.wire.signed import sign_message
from hub.config import HubConfig
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.policy.documents import device_document, site_beacon_keys, site_document
from hub.policy.settings import load_policy_settings
from hub.policy.versions import signed_policy
from hub.store import Database
from hub.store.devices import list_devices

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]  # topic, payload, retain


@dataclass(frozen=True, slots=True)
class Decision:
    """Who decided the policy a publish signs, and why: kept (policy_decisions) when the
    publish signs a new version, and shown beside that change on the dashboard."""

    decided_by: str
    reason: str = ""
    how: str = "hedgerow-hub policy publish"


def record_decision(db: Database, decision: Decision, at_ms: int) -> bool:
    """Keep the decision if a policy version was signed at `at_ms`; True if one was."""
    signed = db.execute("SELECT COUNT(*) FROM policies WHERE created_ms = ?", (at_ms,))
    if not int(signed[0][0]):
        return False
    db.execute(
        "INSERT INTO policy_decisions (at_ms, decided_by, reason, how) VALUES (?, ?, ?, ?)",
        (at_ms, decision.decided_by[:200], decision.reason[:2000], decision.how[:200]),
    )
    return True


def hub_keys_message(keys: HubKeys, now_ms: int) -> bytes:
    """The hub's public keys, signed; its version is the number of HPKE keys (rotation adds)."""
    return sign_message(
        {
            "v": 1,
            "site": HUB_KEYS_SITE,
            "document": hub_document(keys.sealing_key, (keys.signing.verify_key,)),
        },
        site=HUB_KEYS_SITE,
        device="",
        version=len(keys.all),
        time_ms=now_ms,
        signer=keys.signing,
    )


def site_policy(
    db: Database, keys: HubKeys, config: HubConfig, site: str, now_ms: int
) -> tuple[int, bytes]:
    """The current signed policy of a site (a new version only if its content changed)."""
    settings = load_policy_settings(config, site)
    document = site_document(settings, site, site_beacon_keys(db, site), keys)
    return signed_policy(
        db, site=site, device="", document=document, signer=keys.signing, now_ms=now_ms
    )


def device_policy(
    db: Database, keys: HubKeys, config: HubConfig, device: DeviceInfo, now_ms: int
) -> tuple[int, bytes]:
    """The current signed policy of one device."""
    settings = load_policy_settings(config, device.site)
    site_doc = site_document(settings, device.site, site_beacon_keys(db, device.site), keys)
    return signed_policy(
        db,
        site=device.site,
        device=device.device,
        document=device_document(settings, site_doc, device),
        signer=keys.signing,
        now_ms=now_ms,
    )


def known_sites(db: Database, config: HubConfig) -> list[str]:
    """The configured site and every site with a row in sites or devices."""
    rows = db.execute("SELECT site FROM sites UNION SELECT site FROM devices")
    return sorted({config.site, *(str(r[0]) for r in rows)})


def publish_all(
    db: Database,
    keys: HubKeys,
    config: HubConfig,
    publish: Publish,
    *,
    now_ms: int | None = None,
    decision: Decision | None = None,
) -> int:
    """Sign what changed (keeping `decision` beside any new version), then publish every
    retained hub message; returns how many."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out: list[tuple[str, bytes]] = [(topics.hub_keys(), hub_keys_message(keys, now))]
    for site in known_sites(db, config):
        out.append((topics.site_policy(site), site_policy(db, keys, config, site, now)[1]))
        for device in list_devices(db, site):
            topic = topics.device_policy(site, device.device)
            if device.revoked_ms is not None:
                out.append((topic, b""))  # clears the retained policy of a revoked device
            else:
                out.append((topic, device_policy(db, keys, config, device, now)[1]))
    if decision is not None:
        record_decision(db, decision, now)
    for topic, payload in out:
        publish(topic, payload, True)
    log.info("published %d retained hub messages", len(out))
    return len(out)
