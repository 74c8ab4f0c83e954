"""The sealed envelope every Hedgerow component speaks (specified in docs/protocol.md).

Free of scapy and psutil so that the hub and third parties can import it cheaply.
"""

from agent.wire.envelope import (
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
from agent.wire.errors import OpenError, Reason, WireError
from agent.wire.header import Header, Kind, SuiteId, valid_name
from agent.wire.replay import ReplayWindow
from agent.wire.signed import SignedMessage, open_signed, sign_message
from agent.wire.signing import SigningKey, VerifyKey
from agent.wire.suites import OpeningKey, SealingKey

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
