"""Envelopes held until their hub key is loaded: putting a batch's Held outcomes away (within
the bounds), and reading back those whose key is loaded now, as messages to ingest again.

A held envelope is acknowledged once its batch commits, like any other: it is safe in the
database. When a reload brings its key (SIGHUP, a change of DATA/keys noticed, a key id miss),
the ingest thread reads it back as a message (QoS 0: there is nothing to acknowledge) and
commits it through the whole pipeline again, deleting the held row in that transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from common.wire.errors import Reason
from hub.ingest.pipeline import HELD_GENERATION, Held, Rejected
from hub.keys import HubKeys
from hub.mqtt import Incoming
from hub.store.database import Database
from hub.store.held import HeldBounds, HeldEnvelope, held_for_keys, held_key_ids, hold


def hold_outcomes(db: Database, held: Sequence[Held], bounds: HeldBounds) -> list[Rejected]:
    """Hold what the bounds allow; the rest is refused as wrong_key (returned)."""
    if not held:
        return []
    kept = hold(
        db,
        [
            HeldEnvelope(
                site=h.header.site, device=h.header.device, seq=h.header.seq,
                key_id=h.header.key_id, topic=h.message.topic, envelope=h.message.payload,
                received_ms=h.message.received_ms,
            )
            for h in held
        ],
        bounds,
    )  # fmt: skip
    return [
        Rejected(
            h.message, Reason.WRONG_KEY, h.header.site, h.header.device,
            f"sealed to hub key {h.header.key_id.hex()}, not loaded, and no room to hold it",
        )
        for h, ok in zip(held, kept, strict=True)
        if not ok
    ]  # fmt: skip


def openable(db: Database, keys: HubKeys, limit: int) -> tuple[list[Incoming], list[int]]:
    """Up to `limit` held envelopes whose key is loaded now, as messages, and their row ids."""
    known = [k for k in held_key_ids(db) if keys.knows(k)]
    rows = held_for_keys(db, known, limit)
    now = time.monotonic()
    messages = [
        Incoming(r.topic, r.envelope, 0, 0, HELD_GENERATION, r.received_ms, now) for r in rows
    ]
    return messages, [r.id for r in rows]
