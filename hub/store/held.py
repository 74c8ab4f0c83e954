"""The held_envelopes table: authentic envelopes (their signature verified against the
enrolled device's key) sealed to a hub key the hub has not loaded yet, kept whole until it has.

Why: after `hedgerow-hub keys rotate` and `policy publish`, devices seal to the new key at once.
A hub that has not loaded it yet must not acknowledge and drop their reports. Held envelopes
are bounded (in all, in bytes, per device): a compromised device signs as well as a genuine one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hub.store.database import Database
from hub.store.devices import devices_where


@dataclass(frozen=True, slots=True)
class HeldBounds:
    """How much may wait in held_envelopes; beyond it an envelope is refused (and counted)."""

    envelopes: int = 10_000
    bytes: int = 64 * 1024 * 1024
    per_device: int = 1_000


@dataclass(frozen=True, slots=True)
class HeldEnvelope:
    """An envelope to hold (or one held), with what its header says and when it arrived."""

    site: str
    device: str
    seq: int
    key_id: bytes
    topic: str
    envelope: bytes
    received_ms: int
    id: int = 0  # the row's id once held


def hold(db: Database, envelopes: Sequence[HeldEnvelope], bounds: HeldBounds) -> list[bool]:
    """Keep what the bounds allow, in order; True for each envelope kept (or held already)."""
    if not envelopes:
        return []
    count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM held_envelopes")[0]
    total, total_bytes = int(count), int(size)
    per_device: dict[tuple[str, str], int] = {}
    for where, params in devices_where({(e.site, e.device) for e in envelopes}):
        for site, device, n in db.execute(
            f"SELECT site, device, COUNT(*) FROM held_envelopes WHERE {where} "
            "GROUP BY site, device",
            params,
        ):
            per_device[(site, device)] = int(n)
    kept: list[bool] = []
    rows: list[tuple[object, ...]] = []
    for e in envelopes:
        key = (e.site, e.device)
        room = (
            total < bounds.envelopes
            and total_bytes + len(e.envelope) <= bounds.bytes
            and per_device.get(key, 0) < bounds.per_device
        )
        kept.append(room)
        if room:
            total += 1
            total_bytes += len(e.envelope)
            per_device[key] = per_device.get(key, 0) + 1
            rows.append(
                (e.site, e.device, e.seq, e.key_id, e.topic, e.envelope, len(e.envelope),
                 e.received_ms)
            )  # fmt: skip
    if rows:
        db.executemany(
            "INSERT INTO held_envelopes (site, device, seq, key_id, topic, envelope, size, "
            "received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (site, device, seq) DO NOTHING",
            rows,
        )
    return kept


def held_key_ids(db: Database) -> list[bytes]:
    """The hub key ids the held envelopes were sealed to."""
    return [bytes(r[0]) for r in db.execute("SELECT DISTINCT key_id FROM held_envelopes")]


def held_for_keys(db: Database, key_ids: Iterable[bytes], limit: int) -> list[HeldEnvelope]:
    """Up to `limit` held envelopes sealed to these keys, in the order they arrived."""
    wanted = list(key_ids)
    if not wanted:
        return []
    marks = ", ".join("?" for _ in wanted)
    rows = db.execute(
        "SELECT id, site, device, seq, key_id, topic, envelope, received_ms FROM held_envelopes "
        f"WHERE key_id IN ({marks}) ORDER BY id LIMIT ?",
        (*wanted, limit),
    )
    return [
        HeldEnvelope(
            site=r[1], device=r[2], seq=int(r[3]), key_id=bytes(r[4]), topic=r[5],
            envelope=bytes(r[6]), received_ms=int(r[7]), id=int(r[0]),
        )
        for r in rows
    ]  # fmt: skip


def release(db: Database, ids: Sequence[int]) -> None:
    """Delete held envelopes (their batch stores what they were)."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        db.execute(
            f"DELETE FROM held_envelopes WHERE id IN ({', '.join('?' for _ in chunk)})", chunk
        )


def held_count(db: Database) -> int:
    """How many envelopes are held."""
    return int(db.execute("SELECT COUNT(*) FROM held_envelopes")[0][0])
