"""What delivery receipts read and write (hub/receipts): the receipts table (how far each
device's envelopes are processed without a gap, so a restarted hub need not work it out from
seq 1 again) and the reads over reports behind it.

A device whose replay window the operator reset (hub.store.replay_guard.reset_window, a
seq_resets row) numbers from 1 again, so a `through` kept from before that reset is void: it is
never read back, and is deleted when seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from hub.store.database import Database
from hub.store.devices import devices_where

CHUNK = 512  # seqs read per statement while walking a device's reports
_IN_CHUNK = 400  # seqs per IN (...) list: well under SQLite's bound-parameter limit
_FLOOR_MARK = '%"spool_floor"%'  # common.receipt.FLOOR_EVENT, as it appears in a stored body


def load_throughs(db: Database, devices: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The `through` kept for each of these devices (absent: none kept, or void since a reset
    of the device's window, and then deleted)."""
    found: dict[tuple[str, str], int] = {}
    void: list[tuple[str, str, int]] = []
    for where, params in devices_where(devices):
        for site, device, through, updated_ms, reset in db.execute(
            "SELECT site, device, through, updated_ms, EXISTS (SELECT 1 FROM seq_resets s "
            "WHERE s.site = receipts.site AND s.device = receipts.device "
            f"AND s.at_ms >= receipts.updated_ms) FROM receipts WHERE {where}",
            params,
        ):
            if reset:
                void.append((site, device, int(updated_ms)))
            else:
                found[(site, device)] = int(through)
    if void:
        db.executemany(
            "DELETE FROM receipts WHERE site = ? AND device = ? AND updated_ms <= ?", void
        )
    return found


def forget_through(db: Database, site: str, device: str) -> None:
    """Delete what is kept for a device (its window was reset: it numbers from 1 again)."""
    db.execute("DELETE FROM receipts WHERE site = ? AND device = ?", (site, device))


def resets_after(db: Database, after_id: int) -> list[tuple[int, str, str]]:
    """(id, site, device) of the window resets with an id above `after_id`, oldest first."""
    rows = db.execute(
        "SELECT id, site, device FROM seq_resets WHERE id > ? ORDER BY id", (after_id,)
    )
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def last_reset(db: Database) -> int:
    """The id of the latest window reset (0 if none)."""
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM seq_resets")[0][0])


def save_throughs(db: Database, rows: Sequence[tuple[str, str, int]], now_ms: int) -> None:
    """Keep (site, device, through) for each device; a kept value never goes down (several hub
    processes may save at once)."""
    if rows:
        db.executemany(
            "INSERT INTO receipts (site, device, through, updated_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (site, device) DO UPDATE SET through = CASE WHEN receipts.through "
            "< excluded.through THEN excluded.through ELSE receipts.through END, "
            "updated_ms = excluded.updated_ms",
            [(site, device, through, now_ms) for site, device, through in rows],
        )


def seqs_after(db: Database, site: str, device: str, after: int) -> Iterator[int]:
    """The device's stored seqs above `after`, ascending, read CHUNK at a time as the caller
    goes (a walk that stops at the first gap reads one chunk)."""
    while True:
        rows = db.execute(
            "SELECT seq FROM reports WHERE site = ? AND device = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (site, device, after, CHUNK),
        )
        for (seq,) in rows:
            yield int(seq)
        if len(rows) < CHUNK:
            return
        after = int(rows[-1][0])


def _chunks(seqs: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(seqs), _IN_CHUNK):
        yield seqs[start : start + _IN_CHUNK]


def stored_among(db: Database, site: str, device: str, seqs: Sequence[int]) -> set[int]:
    """Which of these seqs the device has a stored report for."""
    found: set[int] = set()
    for chunk in _chunks(seqs):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT seq FROM reports WHERE site = ? AND device = ? AND seq IN ({marks})",
            (site, device, *chunk),
        )
        found.update(int(r[0]) for r in rows)
    return found


def floor_events_among(
    db: Database, site: str, device: str, seqs: Sequence[int]
) -> list[tuple[int, str]]:
    """(seq, body) of the stored events among these seqs whose body names a spool floor."""
    found: list[tuple[int, str]] = []
    for chunk in _chunks(seqs):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(
            "SELECT seq, body FROM reports WHERE site = ? AND device = ? AND kind = 'event' "
            f"AND seq IN ({marks}) AND body LIKE ?",
            (site, device, *chunk, _FLOOR_MARK),
        )
        found += [(int(r[0]), str(r[1])) for r in rows]
    return found
