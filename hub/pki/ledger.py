"""The record of every certificate the CA issued and whether it is revoked (DATA/pki/issued.jsonl).

The CRL is made from it, so a revocation survives a rewrite of the CRL.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.wire.keyfile import write_atomic
from hub.pki.authority import PUBLIC_MODE, PkiError


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One issued certificate: its serial (hex), kind, name and validity, and when (if ever)
    it was revoked (ISO 8601 UTC)."""

    serial: str
    kind: str  # "server" or "client"
    name: str
    not_after: str
    revoked: str | None = None


def read_ledger(path: Path) -> list[LedgerEntry]:
    """Every entry, oldest first (empty if nothing was issued yet)."""
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        try:
            entries.append(LedgerEntry(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise PkiError(f"{path} line {number} is not a ledger entry: {exc}") from exc
    return entries


def write_ledger(path: Path, entries: list[LedgerEntry]) -> None:
    """Replace the ledger with `entries`."""
    text = "".join(json.dumps(asdict(e), sort_keys=True) + "\n" for e in entries)
    write_atomic(path, text.encode(), PUBLIC_MODE)


def append_entry(path: Path, entry: LedgerEntry) -> None:
    """Add one entry."""
    write_ledger(path, [*read_ledger(path), entry])


def mark_revoked(path: Path, serial: str, when: datetime.datetime) -> LedgerEntry:
    """Mark the certificate with this serial revoked (PkiError if unknown; idempotent)."""
    entries = read_ledger(path)
    for index, entry in enumerate(entries):
        if entry.serial == serial:
            if entry.revoked is None:
                entries[index] = replace(entry, revoked=when.isoformat(timespec="seconds"))
                write_ledger(path, entries)
            return entries[index]
    raise PkiError(f"no certificate with serial {serial} was issued by this CA ('pki list')")
