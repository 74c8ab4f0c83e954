"""Registering a new device: id, devices row, MQTT account and first signed policy.

Online enrolment and offline bundles both come through `register`, so a device enrolled either
way looks the same to the rest of the hub.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass

from common.enrolment import LOGIN_PREFIX
from common.identity import DEVICE_CLASSES
from common.wire.header import valid_name
from hub.config import HubConfig
from hub.enroll.broker import reserved_users
from hub.enroll.passwords import hash_password, new_password
from hub.enroll.settings import load_enroll_settings
from hub.enroll.tokens import check_site
from hub.errors import HubError
from hub.keys import HubKeys
from hub.model import DeviceInfo
from hub.policy.publish import device_policy
from hub.policy.settings import load_policy_settings
from hub.store import Database
from hub.store.devices import add_device

log = logging.getLogger(__name__)

CLASS_PREFIX = {"pupil-laptop": "pupil", "staff-laptop": "staff", "sinkhole": "dns"}


@dataclass(frozen=True, slots=True)
class Registration:
    """A newly registered device and the secrets it must be given (once)."""

    info: DeviceInfo
    mqtt_user: str
    mqtt_password: str
    policy: bytes
    policy_version: int


def device_taken(db: Database, device: str) -> bool:
    """True if any site has a device with this id (ids double as broker user names)."""
    return bool(db.execute("SELECT 1 FROM devices WHERE device = ?", (device,)))


def key_enrolled(db: Database, verify_key: bytes) -> bool:
    """True if a device with this signing key is already registered."""
    return bool(db.execute("SELECT 1 FROM devices WHERE verify_key = ?", (verify_key,)))


def allocate_device_id(db: Database, device_class: str) -> str:
    """A fresh id such as pupil-k3xq7m: the class prefix and 6 random base32 characters."""
    for _ in range(20):
        suffix = base64.b32encode(secrets.token_bytes(5)).decode("ascii")[:6].lower()
        candidate = f"{CLASS_PREFIX[device_class]}-{suffix}"
        if not device_taken(db, candidate):
            return candidate
    raise HubError("cannot allocate a device id (20 collisions in a row)")


def resolve_group(config: HubConfig, site: str, device_class: str, group: str | None) -> str | None:
    """The group a new device gets: the one its token (or bundle) names, else the site's
    default for its class; a sinkhole filters by its own client groups and has none unless
    named. Raises HubError for a group the site's policy does not define."""
    if group is None and device_class == "sinkhole":
        return None
    settings = load_policy_settings(config, site)
    chosen = group or settings.group_for_class(device_class)
    if not settings.defines(chosen):
        known = ", ".join(g.name for g in settings.groups)
        raise HubError(f"group {chosen!r} is not defined in the policy of site {site} ({known})")
    return chosen


def register(
    db: Database,
    keys: HubKeys,
    config: HubConfig,
    *,
    site: str,
    device: str,
    device_class: str,
    group: str | None,
    verify_key: bytes,
    beacon_key: bytes | None,
    hostname: str | None,
    now_ms: int,
) -> Registration:
    """Insert the device, make its MQTT account and sign its first policy (caller's transaction)."""
    check_site(site)
    if device_class not in DEVICE_CLASSES:
        raise HubError(f"class {device_class!r}: must be one of {', '.join(DEVICE_CLASSES)}")
    reserved = reserved_users(load_enroll_settings(config).hub_user)
    if not valid_name(device) or device in reserved or device.startswith(LOGIN_PREFIX):
        raise HubError(
            f"device id {device!r}: must be 1-63 chars of [a-z0-9._-], not one of "
            f"{', '.join(reserved)} and not starting with {LOGIN_PREFIX}"
        )
    if device_taken(db, device):
        raise HubError(f"device id {device!r} is already in use")
    if key_enrolled(db, verify_key):
        raise HubError("this device key is already enrolled")
    if (device_class == "sinkhole") != (beacon_key is not None):
        raise HubError("a sinkhole needs a beacon key, and only a sinkhole has one")
    settings = load_policy_settings(config, site)
    group = resolve_group(config, site, device_class, group)
    db.execute(
        "INSERT INTO sites (site, name, created_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (site, site, now_ms),
    )
    password = new_password()
    info = DeviceInfo(
        site=site,
        device=device,
        device_class=device_class,
        group=group,
        verify_key=verify_key,
        enrolled_ms=now_ms,
        hostname=hostname,
        counts_only=device_class in settings.counts_only_classes,
        beacon_key=beacon_key,
    )
    add_device(db, info, mqtt_user=device, mqtt_secret_hash=hash_password(password))
    version, policy = device_policy(db, keys, config, info, now_ms)
    db.execute(
        "UPDATE devices SET policy_version = ? WHERE site = ? AND device = ?",
        (version, site, device),
    )
    log.info("registered %s/%s (%s, group %s)", site, device, device_class, group)
    return Registration(info, device, password, policy, version)
