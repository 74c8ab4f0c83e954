"""The CPU part of opening, run in worker processes (hub.ingest.pool): signature, decryption
and schema, through agent.wire.open_envelope itself, so its order stays the one contract.

What a worker cannot know stays with the ingest thread: which devices exist (it is sent the
batch's device records: public keys and revocation, never private keys) and the replay window
(it opens as if every envelope were new, and says whether the signature was reached and
verified; the ingest thread then applies the replay check before using the result). The hub's
private keys are read from DATA/keys by each worker itself.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent.wire.envelope import DeviceRecord, Keyring, Opened, open_envelope
from agent.wire.errors import OpenError
from agent.wire.header import Header
from agent.wire.signing import VerifyKey
from hub.keys import HubKeys

log = logging.getLogger(__name__)

# (site, device) -> (Ed25519 public key, revoked), or None for a device that is not enrolled.
Records = Mapping[tuple[str, str], tuple[bytes, bool] | None]
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


@dataclass(frozen=True, slots=True)
class Unresolved:
    """The signed header names a device whose record was not sent: open it in-process."""


Result = Opened | Refused | Unresolved


class _Directory:
    """agent.wire.DeviceDirectory over the records sent with a chunk."""

    def __init__(self, records: Records, keys: dict[bytes, VerifyKey]) -> None:
        self.records = records
        self.keys = keys
        self.missing = False

    def device_record(self, site: str, device: str) -> DeviceRecord | None:
        if (site, device) not in self.records:
            self.missing = True
            return None
        found = self.records[(site, device)]
        if found is None:
            return None
        public, revoked = found
        key = self.keys.get(public)
        if key is None:
            if len(self.keys) >= _KEYS_CACHED:
                self.keys.clear()
            key = self.keys[public] = VerifyKey(public)
        return DeviceRecord(key, revoked)


class _Signed:
    """agent.wire.ReplayGuard that notes it was reached (the signature verified) and lets the
    envelope through: the ingest thread checks replay itself."""

    def __init__(self) -> None:
        self.header: Header | None = None
        self.digest: bytes | None = None

    def check(self, header: Header, digest: bytes) -> bool:
        self.header, self.digest = header, digest
        return False


def open_all(
    payloads: Sequence[bytes], records: Records, keyring: Keyring, keys: dict[bytes, VerifyKey]
) -> list[Result]:
    """Open each envelope as far as a worker can: see the module docstring."""
    results: list[Result] = []
    for data in payloads:
        directory, signed = _Directory(records, keys), _Signed()
        try:
            opened = open_envelope(data, devices=directory, keyring=keyring, replay=signed)
            assert isinstance(opened, Opened)  # the stand-in replay guard never says duplicate
            results.append(opened)
        except OpenError as exc:
            if directory.missing:
                results.append(Unresolved())
            else:
                results.append(Refused(exc.reason, exc.detail, signed.header, signed.digest))
    return results


def serve(conn: Connection, keys_dir: str) -> None:
    """A worker process's loop: (records, payloads) in, results out, until None or EOF (the
    hub went away, even by SIGKILL: the worker then exits too)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the hub decides when its workers stop
    keyring = HubKeys(Path(keys_dir))
    keys: dict[bytes, VerifyKey] = {}
    conn.send(READY)
    while True:
        try:
            request: Any = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        records, payloads = request
        try:
            reply: list[Result] | str = open_all(payloads, records, keyring, keys)
        except Exception as exc:  # contained: the hub opens the chunk itself
            log.exception("opening worker failed on a chunk")
            reply = repr(exc)
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
