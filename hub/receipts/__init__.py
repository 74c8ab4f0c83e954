"""Delivery receipts: after ingest commits, the hub tells each device, in a signed retained
message, how far it has processed that device's envelopes without a gap
(docs/protocol.md, "Delivery receipts"; the shared format is common/receipt.py).

`contiguity.py` is the rule, `settled.py` decides which refused envelopes count as processed,
`publisher.py` runs it all on a thread of its own after each commit, coalesced per device.
"""

from hub.receipts.publisher import ReceiptPublisher

__all__ = ["ReceiptPublisher"]
