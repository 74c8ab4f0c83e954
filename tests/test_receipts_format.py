"""Delivery receipts, the pure parts: the signed receipt (common/receipt.py), the device's floor
event, and the hub's contiguity rule (hub/receipts/contiguity.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from common.receipt import (
    FLOOR_EVENT,
    declared_floor,
    floor_event,
    open_receipt,
    receipt_topic,
    sign_receipt,
)
from common.wire import Kind, OpenError, Reason, SigningKey, open_signed, sign_message
from common.wire.errors import WireError
from common.wire.header import Header, SuiteId
from hub.receipts.contiguity import Progress, contiguous

HUB = SigningKey.generate()
SITE, DEVICE = "cape", "dns-1"


def receipt(
    through: int = 7, site: str = SITE, device: str = DEVICE, key: SigningKey = HUB
) -> bytes:
    """A receipt signed by `key`."""
    return sign_receipt(through, site=site, device=device, time_ms=1_000, signer=key)


def signed_raw(body: bytes, *, device: str = DEVICE, kind: Kind = Kind.POLICY) -> bytes:
    """A hub-signed frame around any body (to test what the body check refuses)."""
    header = Header(kind, SuiteId.NONE, SITE, device, 1, 1_000, HUB.verify_key.key_id).encode()
    return header + body + HUB.sign(header + body)


def test_a_receipt_opens_for_its_device() -> None:
    got = open_receipt(receipt(41), hub_keys=[HUB.verify_key], site=SITE, device=DEVICE)
    assert (got.site, got.device, got.through, got.time_ms) == (SITE, DEVICE, 41, 1_000)
    assert receipt_topic(SITE, DEVICE) == "hedgerow/v1/cape/dns-1/receipt"
    assert (
        open_receipt(receipt(0), hub_keys=[HUB.verify_key], site=SITE, device=DEVICE).through == 0
    )


def _tampered() -> bytes:
    data = bytearray(receipt(5))
    data[-70] ^= 1  # a byte of the body: "5" becomes "4"
    return bytes(data)


REFUSED: list[tuple[str, Callable[[], bytes], Reason]] = [
    ("another hub key", lambda: receipt(key=SigningKey.generate()), Reason.WRONG_KEY),
    ("another device", lambda: receipt(device="dns-2"), Reason.UNKNOWN_DEVICE),
    ("another site", lambda: receipt(site="elm"), Reason.UNKNOWN_DEVICE),
    ("a whole site", lambda: signed_raw(b'{"through":5,"v":1}', device=""), Reason.UNKNOWN_DEVICE),
    ("a changed body", _tampered, Reason.BAD_SIGNATURE),
    ("garbage", lambda: os.urandom(200), Reason.MALFORMED),
    ("empty (a cleared retained message)", lambda: b"", Reason.MALFORMED),
    ("a sealed kind", lambda: signed_raw(b"{}", kind=Kind.SUMMARY), Reason.MALFORMED),
    (
        "a device policy",
        lambda: sign_message(
            {"v": 1, "site": SITE, "document": {"group": "pupils"}},
            site=SITE,
            device=DEVICE,
            version=3,
            time_ms=1,
            signer=HUB,
        ),
        Reason.SCHEMA,
    ),
    ("an unknown field", lambda: signed_raw(b'{"through":5,"v":1,"x":0}'), Reason.SCHEMA),
    ("no through", lambda: signed_raw(b'{"v":1}'), Reason.SCHEMA),
    ("v 2", lambda: signed_raw(b'{"through":5,"v":2}'), Reason.SCHEMA),
    ("a negative through", lambda: signed_raw(b'{"through":-1,"v":1}'), Reason.SCHEMA),
    ("through 2^63", lambda: signed_raw(b'{"through":9223372036854775808,"v":1}'), Reason.SCHEMA),
    ("a string through", lambda: signed_raw(b'{"through":"5","v":1}'), Reason.SCHEMA),
    ("a boolean through", lambda: signed_raw(b'{"through":true,"v":1}'), Reason.SCHEMA),
    ("a duplicate key", lambda: signed_raw(b'{"through":5,"through":9,"v":1}'), Reason.SCHEMA),
    ("not JSON", lambda: signed_raw(b"\xff\xfe"), Reason.SCHEMA),
    ("NaN", lambda: signed_raw(b'{"through":NaN,"v":1}'), Reason.SCHEMA),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_is_not_this_devices_receipt_is_refused(
    make: Callable[[], bytes], reason: Reason
) -> None:
    with pytest.raises(OpenError) as caught:
        open_receipt(make(), hub_keys=[HUB.verify_key], site=SITE, device=DEVICE)
    assert caught.value.reason is reason


def test_a_receipt_is_never_taken_for_a_policy() -> None:
    with pytest.raises(OpenError) as caught:
        open_signed(receipt(5), hub_keys=[HUB.verify_key], site=SITE, device=DEVICE)
    assert caught.value.reason is Reason.SCHEMA


@pytest.mark.parametrize("through", [-1, 2**63, True])
def test_the_hub_cannot_sign_a_receipt_out_of_bounds(through: int) -> None:
    with pytest.raises(WireError):
        receipt(through)


def test_the_floor_event_round_trips_and_fits_the_event_schema() -> None:
    from common.wire import payload

    document = floor_event(1024, 5_000)
    payload.validate(Kind.EVENT, document)
    assert declared_floor(json.loads(payload.encode(Kind.EVENT, document))) == 1024
    assert document["type"] == FLOOR_EVENT
    assert declared_floor({"v": 1, "type": "blocked", "at": 1, "count": 3}) is None
    assert declared_floor({"v": 1, "type": FLOOR_EVENT, "at": 1}) is None
    assert declared_floor({"v": 1, "type": FLOOR_EVENT, "at": 1, "count": True}) is None


CONTIGUOUS: list[tuple[str, int, list[int], set[int], int]] = [
    ("nothing stored", 0, [], set(), 0),
    ("a run from 1", 0, [1, 2, 3], set(), 3),
    ("a gap stops it", 0, [1, 2, 4, 5], set(), 2),
    ("seq 1 missing (an unfired will)", 0, [2, 3], set(), 0),
    ("settled fills a gap", 0, [1, 2, 4, 5], {3}, 5),
    ("settled alone", 3, [], {4, 5, 7}, 5),
    ("from a kept start", 100, [101, 102, 104], set(), 102),
    ("rows below the start are passed over", 5, [3, 4, 6], set(), 6),
    ("a settled seq that is also stored", 0, [1, 2, 3], {2}, 3),
]


@pytest.mark.parametrize(
    ("start", "stored", "settled", "expected"),
    [c[1:] for c in CONTIGUOUS],
    ids=[c[0] for c in CONTIGUOUS],
)
def test_contiguity(start: int, stored: list[int], settled: set[int], expected: int) -> None:
    assert contiguous(start, iter(stored), settled) == expected


def test_a_declared_floor_moves_through_but_never_past_the_declaring_event() -> None:
    stored = [1, 2, 1030, 1031]
    progress = Progress()
    assert progress.advance(lambda after: (s for s in stored if s > after)) == 2
    assert not progress.declare(1, 1031)  # below what is already declared or processed: 0
    assert progress.declare(1029, 1031)
    assert progress.advance(lambda after: (s for s in stored if s > after)) == 1031
    # A floor at or above the event's own seq speaks for seqs not issued yet: capped.
    capped = Progress()
    assert capped.declare(10**9, 50) and capped.declared == 49
    assert capped.advance(lambda after: iter(())) == 49


def test_through_never_goes_down() -> None:
    progress = Progress(through=10)
    assert progress.advance(lambda after: iter(())) == 10
    progress.settle(5)  # at or below through: nothing to remember
    assert progress.settled == set()
