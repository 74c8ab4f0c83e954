"""Errors of the wire format: one type, with a reason code, for anything that fails to open."""

from __future__ import annotations

from enum import StrEnum

from common.errors import HedgerowError


class Reason(StrEnum):
    """Why an envelope or signed message was refused. These strings are a contract (docs/protocol.md)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED = "revoked"
    BAD_SIGNATURE = "bad_signature"
    WRONG_KEY = "wrong_key"
    DECRYPT_FAILED = "decrypt_failed"
    REPLAY = "replay"
    SCHEMA = "schema"


class WireError(HedgerowError):
    """Raised when a message cannot be built (bad arguments on the sending side)."""


class OpenError(WireError):
    """The only error opening raises: carries a `reason` code and a human-readable detail."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
