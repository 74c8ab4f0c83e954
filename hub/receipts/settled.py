"""Which refused envelopes count as processed for a receipt: authentic ones that can never be
stored, because what refused them is in their own bytes.

Ingest acknowledged the envelope but did not store it. If its signature verifies and it fails
to decrypt or to fit the schema, arrived on another kind's topic, or is older than the replay
window, sending it again would only be refused again (and counted against the device by the
security rule): its seq is settled, and the receipt may pass it. Anything else is not settled:
a forged envelope says nothing about the device, one sealed to a hub key not loaded yet is held
and opened later, and one that opens fine was dropped for a passing reason (a throttled burst,
a store failure), so the device must send it again.

The check runs common.wire's own opening pipeline again, so it cannot drift from ingest's order;
it runs only for the few acknowledged-but-unstored seqs a receipt is waiting on.
"""

from __future__ import annotations

from common.wire.envelope import DeviceRecord, open_envelope
from common.wire.errors import OpenError, Reason
from common.wire.header import Header
from common.wire.replay import DEFAULT_WINDOW
from common.wire.topics import UpTopic
from hub.keys import HubKeys

PERMANENT = frozenset({Reason.DECRYPT_FAILED, Reason.SCHEMA})


class _Probe:
    """DeviceDirectory and ReplayGuard for one envelope: its device's record, and a replay
    check that notes the signature verified (open_envelope checks it just before) and says new."""

    def __init__(self, record: DeviceRecord) -> None:
        self.record = record
        self.verified = False

    def device_record(self, site: str, device: str) -> DeviceRecord:
        return self.record

    def check(self, header: Header, digest: bytes) -> bool:
        self.verified = True
        return False


def refused_for_good(
    data: bytes,
    topic: UpTopic,
    record: DeviceRecord,
    keys: HubKeys,
    highest: int,
    window: int = DEFAULT_WINDOW,
) -> bool:
    """True if this unstored envelope from `topic` is authentic and could never be stored
    (`highest`: the device's highest stored seq). Raises nothing."""
    probe = _Probe(record)
    try:
        opened = open_envelope(data, devices=probe, keyring=keys, replay=probe)
    except OpenError as exc:
        return probe.verified and exc.reason in PERMANENT
    header = opened.header
    if (header.site, header.device, header.kind) != (topic.site, topic.device, topic.kind):
        return True  # authentic, but signed for another topic: refused as malformed each time
    return header.seq <= highest - window
