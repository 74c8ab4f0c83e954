"""A device's identity directory, written by enrolment and read by every agent daemon.

DIR/device.json   0600  the device's Ed25519 key, site, device id, class, group
DIR/beacon.json   0600  the site beacon key (sinkholes only)
DIR/hub.json      0644  the hub's HPKE public key to seal to, and its signing keys
DIR/mqtt.json     0600  broker URL and credentials
DIR/seq                 the never-repeating sequence counter
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import HedgerowError
from common.wire.errors import WireError
from common.wire.header import valid_name
from common.wire.keyfile import b64, read_json, unb64, write_json
from common.wire.sequence import Sequence
from common.wire.signing import SigningKey, VerifyKey
from common.wire.suites import SUITE_NAMES, SealingKey, suite_name

DEVICE_CLASSES = ("pupil-laptop", "staff-laptop", "sinkhole")


class IdentityError(HedgerowError):
    """The identity directory is missing, incomplete or corrupt."""


@dataclass(frozen=True, slots=True)
class MqttCredentials:
    """How a device logs in to the broker (per-device username and password)."""

    url: str
    username: str | None = None
    password: str | None = None
    ca: str | None = None  # path to the CA certificate for mqtts://


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything a device needs to seal, sign and publish."""

    site: str
    device: str
    device_class: str
    group: str | None
    key: SigningKey
    hub_key: SealingKey
    hub_verify_keys: tuple[VerifyKey, ...]
    mqtt: MqttCredentials
    beacon_key: SigningKey | None = None

    def save(self, directory: Path) -> None:
        """Write the identity atomically, private files with mode 0600."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json(
            directory / "device.json",
            {
                "type": "hedgerow-device",
                "site": self.site,
                "device": self.device,
                "class": self.device_class,
                "group": self.group,
                "private": b64(self.key.private),
                "public": b64(self.key.public),
            },
            private=True,
        )
        if self.beacon_key is not None:
            write_json(
                directory / "beacon.json",
                {
                    "type": "hedgerow-beacon",
                    "site": self.site,
                    "private": b64(self.beacon_key.private),
                    "public": b64(self.beacon_key.public),
                },
                private=True,
            )
        write_json(
            directory / "hub.json", hub_document(self.hub_key, self.hub_verify_keys), private=False
        )
        write_json(
            directory / "mqtt.json",
            {
                "url": self.mqtt.url,
                "username": self.mqtt.username,
                "password": self.mqtt.password,
                "ca": self.mqtt.ca,
            },
            private=True,
        )

    @classmethod
    def load(cls, directory: Path) -> Identity:
        """Read an identity directory; raises IdentityError naming the file and the problem."""
        directory = Path(directory)
        if not (directory / "device.json").exists():
            raise IdentityError(f"{directory}: not enrolled (no device.json); run enroll first")
        try:
            dev = read_json(directory / "device.json")
            hub = read_json(directory / "hub.json")
            mqtt = read_json(directory / "mqtt.json")
            beacon = (
                read_json(directory / "beacon.json")
                if (directory / "beacon.json").exists()
                else None
            )
            hub_key, verify = parse_hub_document(hub)
            identity = cls(
                site=str(dev["site"]),
                device=str(dev["device"]),
                device_class=str(dev["class"]),
                group=dev.get("group"),
                key=SigningKey(unb64(str(dev["private"]), "device.json private")),
                hub_key=hub_key,
                hub_verify_keys=verify,
                mqtt=MqttCredentials(
                    url=str(mqtt["url"]),
                    username=mqtt.get("username"),
                    password=mqtt.get("password"),
                    ca=mqtt.get("ca"),
                ),
                beacon_key=SigningKey(unb64(str(beacon["private"]), "beacon.json private"))
                if beacon
                else None,
            )
        except (KeyError, TypeError, WireError) as exc:
            raise IdentityError(f"{directory}: identity is incomplete or corrupt: {exc}") from exc
        if not (valid_name(identity.site) and valid_name(identity.device)):
            raise IdentityError(f"{directory}: bad site or device id")
        if identity.device_class not in DEVICE_CLASSES:
            raise IdentityError(f"{directory}: unknown device class {identity.device_class!r}")
        return identity

    @staticmethod
    def sequence(directory: Path) -> Sequence:
        """The device's persistent sequence counter."""
        return Sequence(Path(directory) / "seq")


def hub_document(hub_key: SealingKey, verify_keys: tuple[VerifyKey, ...]) -> dict[str, Any]:
    """The public hub keys as devices store them (and as enrolment and bundles carry them)."""
    return {
        "type": "hedgerow-hub-public",
        "hpke": {
            "suite": suite_name(hub_key.suite),
            "public": b64(hub_key.public),
            "key_id": hub_key.key_id.hex(),
        },
        "signing": [b64(k.public) for k in verify_keys],
    }


def parse_hub_document(doc: dict[str, Any]) -> tuple[SealingKey, tuple[VerifyKey, ...]]:
    """Inverse of hub_document(); raises KeyError, TypeError or WireError."""
    hpke = doc["hpke"]
    suite = SUITE_NAMES.get(str(hpke["suite"]))
    if suite is None:
        raise WireError(f"unknown suite {hpke['suite']!r}")
    key = SealingKey(suite, unb64(str(hpke["public"]), "hub public key"))
    verify = tuple(VerifyKey(unb64(str(k), "hub signing key")) for k in doc["signing"])
    if not verify:
        raise WireError("no hub signing key")
    return key, verify
