"""A DeviceDirectory (common.wire.DeviceDirectory) over the devices table, cached briefly.

Ingest loads every device a batch names with one query before opening the batch (load()), so
a revocation or a new enrolment made by another process (hedgerow-hub revoke, the enrolment
service) takes effect from the next batch. A device looked up outside that (a header naming
another device than its topic) is cached for `ttl_s` seconds. Verify keys are parsed once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from common.wire.envelope import DeviceRecord
from common.wire.errors import WireError
from common.wire.signing import VerifyKey
from hub.model import DeviceInfo
from hub.store.database import Database
from hub.store.devices import get_device, get_devices

DEFAULT_TTL_S = 2.0


@dataclass(frozen=True, slots=True)
class _Entry:
    loaded: float
    info: DeviceInfo | None
    record: DeviceRecord | None


class CachedDirectory:
    """Device lookups for the opening pipeline, from one thread's database connection."""

    def __init__(self, db: Database, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], _Entry] = {}

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        """(Re)load these devices from the table in one query: ingest calls it per batch."""
        wanted = set(keys)
        found = get_devices(self.db, wanted)
        now = time.monotonic()
        for key in wanted:
            self._store(key, now, found.get(key))

    def _entry(self, site: str, device: str) -> _Entry:
        key = (site, device)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry.loaded < self.ttl_s:
            return entry
        return self._store(key, now, get_device(self.db, site, device))

    def _store(self, key: tuple[str, str], now: float, info: DeviceInfo | None) -> _Entry:
        entry = self._entries.get(key)
        record: DeviceRecord | None = None
        if info is not None:
            verify_key = (
                entry.record.verify_key
                if entry is not None
                and entry.record is not None
                and entry.record.verify_key.public == info.verify_key
                else _verify_key(info.verify_key)
            )
            if verify_key is not None:
                record = DeviceRecord(verify_key, revoked=info.revoked_ms is not None)
        if len(self._entries) > 100_000:
            self._entries.clear()
        entry = _Entry(now, info, record)
        self._entries[key] = entry
        return entry

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        """The device's record, or None if it is not enrolled (or its stored key is unusable)."""
        return self._entry(site, device).record

    def info(self, site: str, device: str) -> DeviceInfo | None:
        """The device's row, as last loaded."""
        return self._entry(site, device).info

    def invalidate(self) -> None:
        """Forget everything (after a rollback, or on demand)."""
        self._entries.clear()


def _verify_key(raw: bytes) -> VerifyKey | None:
    try:
        return VerifyKey(raw)
    except WireError:
        return None
