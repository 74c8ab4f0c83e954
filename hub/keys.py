"""The hub's keys under DATA/keys: HPKE key pairs (current and rotated-out) and the signing key.

Rotated-out HPKE keys stay able to decrypt, because agents may hold sealed summaries for weeks
offline. Devices seal to the newest key once their signed policy names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.wire.header import SuiteId
from common.wire.keyfile import (
    load_opening_key,
    load_signing_key,
    opening_key_document,
    read_json,
    signing_key_document,
    write_json,
)
from common.wire.signing import SigningKey
from common.wire.suites import OpeningKey, SealingKey
from hub.errors import HubError

SIGNING_FILE = "signing.json"
HPKE_GLOB = "hpke-*.json"


def _now_iso() -> str:
    # Microseconds keep rotation order exact even for two rotations in one second.
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class _Dated:
    created: str
    key: OpeningKey


class HubKeys:
    """All the hub's private keys; implements common.wire.Keyring."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not (self.directory / SIGNING_FILE).exists():
            raise HubError(f"{self.directory}: no hub keys here (run 'hedgerow-hub init' first)")
        self.signing: SigningKey = load_signing_key(self.directory / SIGNING_FILE)
        dated: list[_Dated] = []
        for path in sorted(self.directory.glob(HPKE_GLOB)):
            dated.append(_Dated(str(read_json(path).get("created", "")), load_opening_key(path)))
        if not dated:
            raise HubError(f"{self.directory}: no HPKE key files ({HPKE_GLOB})")
        dated.sort(key=lambda d: d.created)
        self._by_id = {d.key.key_id: d.key for d in dated}
        self.current: OpeningKey = dated[-1].key
        self.all: list[OpeningKey] = [d.key for d in dated]

    def opening_key(self, key_id: bytes) -> OpeningKey | None:
        """The private key with this id, current or rotated-out."""
        return self._by_id.get(key_id)

    @property
    def sealing_key(self) -> SealingKey:
        """What devices should seal to now."""
        return self.current.public_key


def create_keys(directory: Path, suite: SuiteId) -> None:
    """Make the first HPKE key pair and the signing key; refuse if any key file exists."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (directory / SIGNING_FILE).exists() or any(directory.glob(HPKE_GLOB)):
        raise HubError(f"{directory} already holds hub keys; refusing to overwrite them")
    write_json(
        directory / SIGNING_FILE,
        signing_key_document(SigningKey.generate(), _now_iso()),
        private=True,
        exclusive=True,
    )
    add_hpke_key(directory, suite)


def add_hpke_key(directory: Path, suite: SuiteId) -> OpeningKey:
    """Generate a new HPKE key pair; it becomes current, the old ones keep decrypting."""
    key = OpeningKey.generate(suite)
    path = directory / f"hpke-{key.key_id.hex()}.json"
    write_json(path, opening_key_document(key, _now_iso()), private=True, exclusive=True)
    return key
