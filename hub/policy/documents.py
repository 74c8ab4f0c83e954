"""What a signed policy says: the document for a site and for one device in it.

Site document (payload "document" of hedgerow/v1/<site>/policy):
  site, default_group, groups {name: {block: [...]}}, beacon_keys [base64 Ed25519 public],
  hub (common.identity.hub_document: the HPKE key to seal to now, and the signing keys),
  reporting {summary_interval_s}
A device document adds: device, class, group, block (its group's list),
reporting.counts_only, and what the laptop agent needs to filter the same off site and to work:
  filter {lists [{category, source, statutory, refresh_h}], blocked_answer,
          group {allow, safesearch, youtube, block_encrypted_dns, block_bypass, block_ech, pupils}}
  agent {beacon_max_rtt_ms, flagged_apps (only when configured)}
docs/enrolment.md "Policies" is the reference.
"""

from __future__ import annotations

from typing import Any

from common.identity import hub_document
from common.wire.keyfile import b64
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.policy.settings import PolicySettings, default_group_policy
from hub.store import Database


def site_beacon_keys(db: Database, site: str) -> list[bytes]:
    """Beacon public keys of the site's enrolled, not revoked sinkholes (oldest first)."""
    rows = db.execute(
        "SELECT beacon_key FROM devices WHERE site = ? AND beacon_key IS NOT NULL "
        "AND revoked_ms IS NULL ORDER BY enrolled_ms, device",
        (site,),
    )
    return [bytes(r[0]) for r in rows]


def site_document(
    settings: PolicySettings, site: str, beacon_keys: list[bytes], keys: HubKeys
) -> dict[str, Any]:
    """The policy every device of a site follows."""
    return {
        "site": site,
        "default_group": settings.default_group,
        "groups": {g.name: {"block": list(g.block)} for g in settings.groups},
        "beacon_keys": [b64(k) for k in beacon_keys],
        "hub": hub_document(keys.sealing_key, (keys.signing.verify_key,)),
        "reporting": {"summary_interval_s": settings.summary_interval_s},
    }


def device_document(
    settings: PolicySettings, site_doc: dict[str, Any], device: DeviceInfo
) -> dict[str, Any]:
    """One device's policy: the site's, plus its own group and reporting mode."""
    group = settings.group(device.group)
    counts_only = device.counts_only or device.device_class in settings.counts_only_classes
    # A group the settings no longer name (renamed since enrolment) filters by its name's
    # defaults and blocks nothing, as its empty block list says.
    filtering = group or default_group_policy(device.group or settings.default_group)
    return {
        **site_doc,
        "device": device.device,
        "class": device.device_class,
        "group": group.name if group else device.group,
        "block": list(group.block) if group else [],
        "reporting": {**site_doc["reporting"], "counts_only": counts_only},
        "filter": settings.filter_document(filtering),
        "agent": settings.agent.document(),
    }
