"""Delivery receipts (docs/protocol.md, "Delivery receipts"): what the hub and a device tell each
other so that a report leaves the device only once the hub has committed it.

- The hub's **receipt**: a hub-signed message, retained on the device's own topic
  `hedgerow/v1/<site>/<device>/receipt`, saying that every seq of that device up to and
  including `through` is processed (stored, or refused for good). The device deletes what it
  covers and sends the rest again.
- The device's **floor**: a sealed `spool_floor` event saying that the device holds nothing at
  or below seq `count` that the hub has not receipted. Seqs a device never sends (its MQTT will,
  numbers skipped at a restart, a report its full spool refused) would otherwise hold the
  receipt back for ever.

A receipt is framed as every hub-signed message (header || body || Ed25519 signature; kind 5,
suite 0, `device` never empty) but its body, `{"through":N,"v":1}`, is not a policy document, and
a policy's body is not a receipt: the policy check refuses a receipt (no `site`) and
open_receipt() refuses a policy (unknown fields), so neither can be taken for the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from common.wire.envelope import split
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import MAX_U63, Header, Kind, SuiteId
from common.wire.payload import strict_json
from common.wire.signing import SigningKey, VerifyKey
from common.wire.topics import ROOT

RECEIPT_KIND = Kind.POLICY  # the kind of every hub-signed message
RECEIPT_SEQ = 1  # a receipt has no version of its own: `through` is its value
FLOOR_EVENT = "spool_floor"  # the event type of a device's floor
_FIELDS = frozenset({"v", "through"})


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified receipt: every seq of (site, device) in 1..through is processed."""

    site: str
    device: str
    through: int
    time_ms: int  # the hub's clock when it signed


def receipt_topic(site: str, device: str) -> str:
    """Where the hub keeps a device's receipt (retained, QoS 1); only that device may read it."""
    return f"{ROOT}/{site}/{device}/receipt"


def _body(through: int) -> bytes:
    return json.dumps({"through": through, "v": 1}, separators=(",", ":"), sort_keys=True).encode()


def sign_receipt(
    through: int, *, site: str, device: str, time_ms: int, signer: SigningKey
) -> bytes:
    """The hub's signed receipt for one device. Raises WireError for a value out of bounds."""
    if type(through) is not int or not 0 <= through <= MAX_U63:
        raise WireError(f"receipt through {through!r} is outside 0..2^63-1")
    if not device:
        raise WireError("a receipt is for one device, never a whole site")
    header = Header(
        RECEIPT_KIND, SuiteId.NONE, site, device, RECEIPT_SEQ, time_ms, signer.verify_key.key_id
    ).encode()
    body = _body(through)
    return header + body + signer.sign(header + body)


def _through(body: bytes) -> int:
    """The `through` of a receipt body; raises OpenError(schema) for anything else."""
    doc = strict_json(body)
    if type(doc) is not dict or set(doc) != _FIELDS:
        raise OpenError(Reason.SCHEMA, f"a receipt has exactly the fields {sorted(_FIELDS)}")
    through = doc["through"]
    if type(doc["v"]) is not int or doc["v"] != 1:
        raise OpenError(Reason.SCHEMA, "receipt $.v must be 1")
    if type(through) is not int or not 0 <= through <= MAX_U63:
        raise OpenError(Reason.SCHEMA, "receipt $.through must be an integer from 0 to 2^63-1")
    return through


def open_receipt(data: bytes, *, hub_keys: Iterable[VerifyKey], site: str, device: str) -> Receipt:
    """Verify a receipt for this device. Raises only OpenError: malformed (not a receipt's frame),
    wrong_key (no trusted hub key signed it), bad_signature, unknown_device (for another site or
    device, or for a whole site), schema (the body is not a receipt)."""
    header, raw_header, body, signature = split(data)  # raises only OpenError
    if header.kind is not RECEIPT_KIND or header.suite is not SuiteId.NONE:
        raise OpenError(Reason.MALFORMED, "not a hub-signed message")
    key = next((k for k in hub_keys if k.key_id == header.key_id), None)
    if key is None:
        raise OpenError(Reason.WRONG_KEY, "not signed by a hub key this device trusts")
    key.verify(signature, raw_header + body)
    if (header.site, header.device) != (site, device):
        raise OpenError(
            Reason.UNKNOWN_DEVICE, f"receipt for {header.site}/{header.device or '(site)'}"
        )
    return Receipt(header.site, header.device, _through(body), header.time_ms)


def floor_event(floor: int, at_ms: int) -> dict[str, Any]:
    """The event document in which a device declares that it holds nothing unreceipted at or
    below seq `floor`. The floor travels in `count`, which counts-only devices keep (they drop
    `detail`)."""
    return {"v": 1, "type": FLOOR_EVENT, "at": at_ms, "count": floor}


def declared_floor(document: Mapping[str, Any]) -> int | None:
    """The floor an event document declares, or None if it is not a floor event."""
    if document.get("type") != FLOOR_EVENT:
        return None
    floor = document.get("count")
    if type(floor) is not int or not 0 <= floor <= MAX_U63:
        return None
    return floor
