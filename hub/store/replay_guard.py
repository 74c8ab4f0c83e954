"""A ReplayGuard (common.wire.ReplayGuard) over the reports table, with a per-device memory.

The rules are docs/protocol.md's "Replay": the same (site, device, seq) with the same digest is
a duplicate (acknowledge, store nothing); a different digest is a replay; a seq older than
(highest seq seen for the device - window) that was never stored is a replay.

Devices send seqs in increasing order, so the common case (a seq above anything seen) is decided
from memory; only a seq at or below the highest seen costs one indexed lookup.

The operator resets a device's window with reset_window() (`hedgerow-hub devices reset-seq`),
for a device that starts again from seq 1 (its spool and sequence file wiped). Its stored
reports keep their rows and digests, but their seqs move below zero, out of the new numbering's
way (the unique (site, device, seq) index would refuse seq 1 otherwise), and a seq_resets row
says by how much. Running hubs read that row with their next batch (poll_resets()) and forget
what they remember of the device.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.wire.header import Header
from common.wire.replay import DEFAULT_WINDOW, judge
from hub.errors import StoreError
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
        self._last_reset = last_reset_id(db)

    def _state(self, site: str, device: str) -> _State:
        key = (site, device)
        state = self._devices.get(key)
        if state is None:
            # Below zero: reports from before a reset (reset_window), out of the window's way.
            state = _State(highest=max(0, max_seq(self.db, site, device)))
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
            self._devices[key] = _State(highest=max(0, found.get(key, 0)))
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

    def poll_resets(self) -> list[tuple[str, str]]:
        """Forget the devices whose window was reset since the last poll (by any process);
        return them. One indexed read per call: ingest polls once per batch."""
        rows = self.db.execute(
            "SELECT id, site, device FROM seq_resets WHERE id > ? ORDER BY id", (self._last_reset,)
        )
        reset: list[tuple[str, str]] = []
        for row_id, site, device in rows:
            self._last_reset = max(self._last_reset, int(row_id))
            self.forget(site, device)
            reset.append((site, device))
        return reset


def last_reset_id(db: Database) -> int:
    """The id of the latest window reset (0 if none)."""
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM seq_resets")[0][0])


@dataclass(frozen=True, slots=True)
class WindowReset:
    """What reset_window did: `moved` stored reports with seq 1..highest now have seq - shift."""

    site: str
    device: str
    highest: int
    moved: int
    shift: int


def reset_window(db: Database, site: str, device: str, now_ms: int) -> WindowReset:
    """Reset a device's replay window, in one transaction: its next envelope may carry any seq
    from 1 to 2^20 again. Stored reports with seq >= 1 move below every seq the device has
    stored (seq - shift, shift = highest - lowest + 1 with lowest = min(1, lowest stored)), so
    their rows, digests and alerts stay, and the original seq is the stored one + shift.
    Raises StoreError if the device was never enrolled."""
    with db.transaction():
        if not db.execute("SELECT 1 FROM devices WHERE site = ? AND device = ?", (site, device)):
            raise StoreError(f"no device {site}/{device}")
        low, high, moved = db.execute(
            "SELECT MIN(seq), MAX(seq), SUM(CASE WHEN seq > 0 THEN 1 ELSE 0 END) FROM reports "
            "WHERE site = ? AND device = ?",
            (site, device),
        )[0]
        highest = max(0, int(high or 0))
        shift = highest - min(1, int(low or 1)) + 1 if highest > 0 else 0
        if shift:
            db.execute(
                "UPDATE reports SET seq = seq - ? WHERE site = ? AND device = ? AND seq > 0",
                (shift, site, device),
            )
        db.execute("UPDATE devices SET last_seq = 0 WHERE site = ? AND device = ?", (site, device))
        # its receipt starts again from 0 (hub.receipts): the old one covers seqs it has not
        # issued yet
        db.execute("DELETE FROM receipts WHERE site = ? AND device = ?", (site, device))
        db.execute(
            "INSERT INTO seq_resets (site, device, at_ms, highest, shift) VALUES (?, ?, ?, ?, ?)",
            (site, device, now_ms, highest, shift),
        )
    return WindowReset(site, device, highest, int(moved or 0), shift)
