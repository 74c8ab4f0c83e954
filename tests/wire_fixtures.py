"""Keys and directories for wire tests: generated fresh, never committed."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.wire import (
    DeviceRecord,
    Header,
    Kind,
    OpeningKey,
    ReplayWindow,
    SigningKey,
    SuiteId,
    seal,
)

SITE = "cape-primary"
DEVICE = "lt-042"

SUMMARY = {
    "v": 1,
    "source": "dns",
    "start": 1_700_000_000_000,
    "end": 1_700_000_300_000,
    "client": {"ip": "10.1.2.3", "group": "pupils", "mac": "aa:bb:cc:dd:ee:ff"},
    "counts": {"blocked": 2, "resolved": 40},
    "categories": {"gambling": 2},
    "blocked": [{"name": "bet.example", "category": "gambling", "count": 2}],
    "top_allowed": [{"domain": "bbc.co.uk", "count": 30}],
    "first_seen": 1_700_000_001_000,
    "last_seen": 1_700_000_299_000,
}


@dataclass
class Directory:
    """A DeviceDirectory over a dict."""

    records: dict[tuple[str, str], DeviceRecord] = field(default_factory=dict)

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        return self.records.get((site, device))


@dataclass
class Ring:
    """A Keyring over a list of keys."""

    keys: list[OpeningKey]

    def opening_key(self, key_id: bytes) -> OpeningKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


@dataclass
class World:
    """A hub key, a device key and the hub's view of them."""

    hub: OpeningKey
    device: SigningKey
    directory: Directory
    ring: Ring
    replay: ReplayWindow

    def seal(
        self,
        seq: int = 1,
        kind: Kind = Kind.SUMMARY,
        doc: dict[str, object] | None = None,
        device: str = DEVICE,
    ) -> bytes:
        return seal(
            kind,
            doc if doc is not None else SUMMARY,
            site=SITE,
            device=device,
            seq=seq,
            time_ms=1_700_000_300_000,
            to=self.hub.public_key,
            signer=self.device,
        )


def make_world(suite: SuiteId = SuiteId.MLKEM768_X25519) -> World:
    """Fresh keys; the device is enrolled."""
    hub = OpeningKey.generate(suite)
    device = SigningKey.generate()
    directory = Directory({(SITE, DEVICE): DeviceRecord(device.verify_key)})
    return World(hub, device, directory, Ring([hub]), ReplayWindow(window=100))


def header_len(envelope: bytes) -> int:
    """Length of the header at the front of an envelope."""
    from common.wire.header import decode_header

    return decode_header(envelope)[1]


__all__ = ["DEVICE", "SITE", "SUMMARY", "Header", "World", "header_len", "make_world"]
