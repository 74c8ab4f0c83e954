"""The sealed envelope every Hedgerow component speaks (specified in docs/protocol.md).

Free of scapy and psutil so that the hub and third parties can import it cheaply.
"""

from common.wire.envelope import (
    MAX_ENVELOPE,
    DeviceDirectory,
    DeviceRecord,
    Duplicate,
    Keyring,
    Opened,
    ReplayGuard,
    enroll_request_id,
    open_enroll_request,
    open_envelope,
    seal,
    unseal,
)
from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import Header, Kind, SuiteId, valid_name
from common.wire.replay import ReplayWindow
from common.wire.signed import SignedMessage, open_signed, sign_message
from common.wire.signing import SigningKey, VerifyKey
from common.wire.suites import OpeningKey, SealingKey

__all__ = [
    "MAX_ENVELOPE",
    "DeviceDirectory",
    "DeviceRecord",
    "Duplicate",
    "Header",
    "Keyring",
    "Kind",
    "OpenError",
    "Opened",
    "OpeningKey",
    "Reason",
    "ReplayGuard",
    "ReplayWindow",
    "SealingKey",
    "SignedMessage",
    "SigningKey",
    "SuiteId",
    "VerifyKey",
    "WireError",
    "enroll_request_id",
    "open_enroll_request",
    "open_envelope",
    "open_signed",
    "seal",
    "sign_message",
    "unseal",
    "valid_name",
]
