"""The hub's keys under DATA/keys: HPKE key pairs (current and rotated-out) and the signing key.

Rotated-out HPKE keys stay able to decrypt, because agents may hold sealed summaries for weeks
offline. Devices seal to the newest key once their signed policy names it.

A running hub picks up keys added while it runs (`hedgerow-hub keys rotate`): reload() on
SIGHUP, and refresh() on its own, which costs one stat of the directory (write_atomic renames
each key file into place, so a new key always changes the directory's mtime). A lookup of an
unknown key id refreshes too, at most once a second: only envelopes whose signature verified
get that far, so nobody can make the hub read its key files in a loop. A reload is all or
nothing: a directory that no longer loads leaves the keys in force.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
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

log = logging.getLogger(__name__)

SIGNING_FILE = "signing.json"
HPKE_GLOB = "hpke-*.json"
REFRESH_INTERVAL_S = 1.0  # at most one look at the directory per second on a key id miss

Stamp = tuple[int, int, int]  # the directory's (inode, mtime ns, ctime ns)


def _now_iso() -> str:
    # Microseconds keep rotation order exact even for two rotations in one second.
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class _Dated:
    created: str
    key: OpeningKey


@dataclass(frozen=True, slots=True)
class _KeySet:
    """Everything read from the directory at one moment: swapped in whole on reload."""

    signing: SigningKey
    current: OpeningKey
    all: list[OpeningKey]
    by_id: dict[bytes, OpeningKey]
    stamp: Stamp | None


def _stamp(directory: Path) -> Stamp | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


def _read(directory: Path) -> _KeySet:
    """Read every key file; raises HubError (or WireError) if the directory does not load."""
    stamp = _stamp(directory)  # before reading: a change made while we read is seen next time
    if not (directory / SIGNING_FILE).exists():
        raise HubError(f"{directory}: no hub keys here (run 'hedgerow-hub init' first)")
    signing = load_signing_key(directory / SIGNING_FILE)
    dated: list[_Dated] = []
    for path in sorted(directory.glob(HPKE_GLOB)):
        dated.append(_Dated(str(read_json(path).get("created", "")), load_opening_key(path)))
    if not dated:
        raise HubError(f"{directory}: no HPKE key files ({HPKE_GLOB})")
    dated.sort(key=lambda d: d.created)
    keys = [d.key for d in dated]
    return _KeySet(signing, keys[-1], keys, {k.key_id: k for k in keys}, stamp)


class HubKeys:
    """All the hub's private keys; implements common.wire.Keyring."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._keys = _read(self.directory)
        self._lock = threading.Lock()  # one reload at a time (SIGHUP and the ingest thread)
        self._next_look = 0.0
        self.generation = 0  # counts reloads that changed the keys

    @property
    def signing(self) -> SigningKey:
        """The key that signs policies and enrolment answers."""
        return self._keys.signing

    @property
    def current(self) -> OpeningKey:
        """The newest HPKE key: what devices should seal to."""
        return self._keys.current

    @property
    def all(self) -> list[OpeningKey]:
        """Every HPKE key, oldest first."""
        return self._keys.all

    def opening_key(self, key_id: bytes) -> OpeningKey | None:
        """The private key with this id, current or rotated-out. An unknown id looks at the
        directory first (refresh(): at most once a second), in case a key was added."""
        key = self._keys.by_id.get(key_id)
        if key is None and self.refresh():
            key = self._keys.by_id.get(key_id)
        return key

    def knows(self, key_id: bytes) -> bool:
        """True if a key with this id is loaded (without looking at the directory)."""
        return key_id in self._keys.by_id

    @property
    def sealing_key(self) -> SealingKey:
        """What devices should seal to now."""
        return self.current.public_key

    def refresh(self, interval_s: float = REFRESH_INTERVAL_S) -> bool:
        """Reload if the directory changed since the keys were read (at most one stat per
        `interval_s`); True if other keys are now loaded."""
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + interval_s
        if _stamp(self.directory) == self._keys.stamp:
            return False
        return self.reload()

    def reload(self) -> bool:
        """Read the directory again and swap the keys in, all or nothing; True if they changed.
        A directory that does not load is logged and the keys in force stay."""
        with self._lock:
            old = self._keys
            try:
                fresh = _read(self.directory)
            except Exception as exc:  # whatever a bad file raises: keep the keys in force
                log.error("cannot reload the hub keys, keeping those in force: %s", exc)
                # Not again until the directory changes again (or SIGHUP asks).
                self._keys = replace(old, stamp=_stamp(self.directory))
                return False
            changed = set(fresh.by_id) != set(old.by_id) or (
                fresh.signing.verify_key.public != old.signing.verify_key.public
            )
            if not changed:
                self._keys = replace(old, stamp=fresh.stamp)
                return False
            self._keys = fresh  # one reference swap: a reader sees the old keys or the new
            self.generation += 1
        added = sorted(k.hex() for k in set(fresh.by_id) - set(old.by_id))
        log.info(
            "reloaded the hub keys from %s: %d HPKE key(s), current %s%s",
            self.directory,
            len(fresh.all),
            fresh.current.key_id.hex(),
            f", new {', '.join(added)}" if added else "",
        )
        return True


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
