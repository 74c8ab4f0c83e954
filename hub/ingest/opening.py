"""The CPU part of opening, run in worker processes (hub.ingest.pool): signature, decryption
and schema, through common.wire.open_envelope itself, so its order stays the one contract.

The ingest thread has already run the steps before the signature (Opener.screen: size,
header, device known and not revoked) and sends each envelope with its device's public key,
never a private key. The replay window stays with the ingest thread too: a worker decrypts as
if the envelope were new, unless the ingest thread saw that the window already holds its seq
(a redelivery or a replay), and then stops after the signature as open_envelope does for a
duplicate. Either way it says whether the signature verified, and the ingest thread makes the
replay decision before using the result. The hub's private keys are read from DATA/keys by
each worker itself.

This module is imported by every worker process (spawned: a fresh interpreter), so it imports
only what opening needs.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common.wire.envelope import DeviceRecord, Duplicate, Keyring, Opened, open_envelope
from common.wire.errors import OpenError
from common.wire.header import Header
from common.wire.signing import VerifyKey
from hub.keys import HubKeys

log = logging.getLogger(__name__)

# One envelope to open: its bytes, its device's Ed25519 public key, and True to verify only.
Job = tuple[bytes, bytes, bool]
_KEYS_CACHED = 100_000
READY = "ready"  # a worker's first message: keys loaded


@dataclass(frozen=True, slots=True)
class Refused:
    """open_envelope refused the envelope. With a header and digest, the signature verified and
    the refusal came after the replay check: that check decides first whether it counts."""

    reason: str
    detail: str
    header: Header | None
    digest: bytes | None


# Opened: verified and decrypted; Duplicate: verified only (the job said so).
Result = Opened | Duplicate | Refused

# What goes back through the pipe for each job, as plain tuples (pickled in C, where
# dataclasses take Python code both ways); the ingest thread has the header already:
# (OPENED, digest, payload, body), (VERIFIED, digest) or (REFUSED, reason, detail, digest|None).
Reply = tuple[Any, ...]
OPENED, VERIFIED, REFUSED = "opened", "verified", "refused"


def reply_of(result: Result) -> Reply:
    """A result as it goes through the pipe."""
    if isinstance(result, Opened):
        return (OPENED, result.digest, result.payload, result.body)
    if isinstance(result, Duplicate):
        return (VERIFIED, result.digest)
    return (REFUSED, result.reason, result.detail, result.digest)


def result_of(reply: Reply, header: Header) -> Result:
    """A worker's reply as the result it stands for, with the header the ingest thread decoded
    from the same bytes when it screened them."""
    if reply[0] == OPENED:
        return Opened(header, reply[2], reply[1], reply[3])
    if reply[0] == VERIFIED:
        return Duplicate(header, reply[1])
    digest = reply[3]
    return Refused(reply[1], reply[2], None if digest is None else header, digest)


class _Screened:
    """common.wire's DeviceDirectory and ReplayGuard for one screened envelope: its device is
    known and not revoked, and the replay check notes that the signature verified and answers
    "duplicate" for a verify-only job, so that open_envelope stops before decrypting."""

    def __init__(self, key: VerifyKey, verify_only: bool) -> None:
        self.key = key
        self.verify_only = verify_only
        self.header: Header | None = None
        self.digest: bytes | None = None

    def device_record(self, site: str, device: str) -> DeviceRecord:
        return DeviceRecord(self.key)

    def check(self, header: Header, digest: bytes) -> bool:
        self.header, self.digest = header, digest
        return self.verify_only


def open_all(jobs: list[Job], keyring: Keyring, keys: dict[bytes, VerifyKey]) -> list[Reply]:
    """Open each envelope as far as a worker can (see the module docstring)."""
    results: list[Reply] = []
    for data, public, verify_only in jobs:
        key = keys.get(public)
        if key is None:
            if len(keys) >= _KEYS_CACHED:
                keys.clear()
            key = keys[public] = VerifyKey(public)
        screened = _Screened(key, verify_only)
        try:
            opened = open_envelope(data, devices=screened, keyring=keyring, replay=screened)
        except OpenError as exc:
            results.append((REFUSED, exc.reason, exc.detail, screened.digest))
            continue
        results.append(reply_of(opened))
    return results


def serve(conn: Connection, keys_dir: str) -> None:
    """A worker process's loop: jobs in, results out, until None or EOF (the hub went away,
    even by SIGKILL: the worker then exits too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the hub decides when its workers stop
    keyring = HubKeys(Path(keys_dir))
    keys: dict[bytes, VerifyKey] = {}
    conn.send(READY)
    while True:
        try:
            jobs: Any = conn.recv()
        except (EOFError, OSError):
            return
        if jobs is None:
            return
        try:
            reply: list[Reply] | str = open_all(jobs, keyring, keys)
        except Exception as exc:  # contained: the hub opens the chunk itself
            log.exception("opening worker failed on a chunk")
            reply = repr(exc)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
