"""A ReplayGuard (common.wire.ReplayGuard) over the reports table, with a per-device memory.

The rules are docs/protocol.md's "Replay": the same (site, device, seq) with the same digest is
a duplicate (acknowledge, store nothing); a different digest is a replay; a seq older than
(highest seq seen for the device - window) that was never stored is a replay.

Devices send seqs in increasing order, so the common case (a seq above anything seen) is decided
from memory; only a seq at or below the highest seen costs one indexed lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.wire.header import Header
from common.wire.replay import DEFAULT_WINDOW, judge
from hub.store.database import Database
from hub.store.reports import max_seq, max_seqs, stored_digest

_RECENT = 1024  # digests remembered per device (older ones are looked up in the table)
_DEVICES = 100_000  # devices remembered (least recently used are forgotten)


@dataclass(slots=True)
class _State:
    highest: int
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)


class StoreReplayGuard:
    """Implements common.wire.ReplayGuard for one ingest thread's database connection."""

    def __init__(self, db: Database, window: int = DEFAULT_WINDOW) -> None:
        self.db = db
        self.window = window
        self._devices: OrderedDict[tuple[str, str], _State] = OrderedDict()

    def _state(self, site: str, device: str) -> _State:
        key = (site, device)
        state = self._devices.get(key)
        if state is None:
            state = _State(highest=max_seq(self.db, site, device))
            self._devices[key] = state
            if len(self._devices) > _DEVICES:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(key)
        return state

    def load(self, devices: Iterable[tuple[str, str]]) -> None:
        """Read the highest stored seq of each of these devices not yet remembered, in one
        statement per 400 (ingest calls it per batch, instead of one query per new device)."""
        new = {key for key in devices if key not in self._devices}
        if not new:
            return
        found = max_seqs(self.db, new)
        for key in sorted(new):
            self._devices[key] = _State(highest=found.get(key, 0))
        while len(self._devices) > _DEVICES:
            self._devices.popitem(last=False)

    def taken(self, header: Header) -> bool:
        """True if this seq can only be a duplicate or a replay, whatever the envelope (it was
        accepted, or it is older than the window): a hub may then verify the signature and
        skip decrypting, and check() decides after the signature as always."""
        state = self._state(header.site, header.device)
        if header.seq in state.recent:
            return True
        if header.seq > state.highest:
            return False
        return (
            header.seq <= state.highest - self.window
            or stored_digest(self.db, header.site, header.device, header.seq) is not None
        )

    def check(self, header: Header, digest: bytes) -> bool:
        """True for an exact duplicate; raise OpenError(replay) for a replay; False if new."""
        state = self._state(header.site, header.device)
        known = state.recent.get(header.seq)
        if known is None and header.seq <= state.highest:
            known = stored_digest(self.db, header.site, header.device, header.seq)
        return judge(header.seq, known, digest, state.highest, self.window)

    def accept(self, header: Header, digest: bytes) -> None:
        """Remember an envelope that is being stored, so a second copy in the same batch is a
        duplicate. Call forget() if the batch is rolled back."""
        state = self._state(header.site, header.device)
        state.recent[header.seq] = digest
        if len(state.recent) > _RECENT:
            state.recent.popitem(last=False)
        state.highest = max(state.highest, header.seq)

    def forget(self, site: str, device: str) -> None:
        """Drop what is remembered of a device; the next check reloads it from the table."""
        self._devices.pop((site, device), None)
