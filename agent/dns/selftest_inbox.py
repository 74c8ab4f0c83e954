"""The hand-off of `hedgerow-dns selftest` results to the running filter, which sends each one
to the hub as a sealed `selftest` event (docs/protocol.md 6.4) for its checks register.

The command and the daemon are different processes, often different users (the technician
runs the check with sudo; the daemon is the `hedgerow-dns` user), so the hand-off is a file:
`<[report] identity>/selftest/<ms>-<pid>.json`, written whole (temporary file, then rename)
and owned by the daemon's user. The daemon looks every few seconds, offers each result to its
publisher as an urgent event (which spools it, sealed, until the hub's receipt) and then
deletes the file. A file it cannot read or parse is logged, counted and deleted. Nothing in a
result is about a pupil: group names, category names, test domains and counts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INBOX = "selftest"
MAX_BYTES = 64 * 1024
MAX_FAILURES = 32  # listed in one event; the counts always cover them all
_FAILURE_CHARS = 200
_DETAIL_CHARS = 1024  # an event detail's longest string (docs/protocol.md 6.4)


def inbox_dir(identity: Path) -> Path:
    """Where results wait for the daemon."""
    return identity / INBOX


def event_detail(summary: dict[str, Any], failures: list[str]) -> dict[str, Any]:
    """The `detail` of a selftest event (flat: an event's detail holds strings of at most 1024
    characters, integers and booleans): the summary's counts, the untested groups joined by
    commas, and as many failures, joined by "; ", as fit in 1024 characters."""
    listed = ""
    for failure in failures[:MAX_FAILURES]:
        more = failure[:_FAILURE_CHARS]
        joined = f"{listed}; {more}" if listed else more
        if len(joined) > _DETAIL_CHARS:
            break
        listed = joined
    return {
        "server": str(summary["server"])[:255],
        "passed": int(summary["passed"]),
        "failed": int(summary["failed"]),
        "not_testable": ",".join(str(g) for g in summary["not_testable"])[:_DETAIL_CHARS],
        "ok": bool(summary["ok"]),
        "failures": listed,
    }


def drop(identity: Path, at_ms: int, detail: dict[str, Any]) -> Path:
    """Write one result for the daemon; returns its path. OSError if it cannot be written
    (the identity directory missing or not writable)."""
    if not identity.is_dir():
        raise FileNotFoundError(f"{identity}: no such directory (is this filter enrolled?)")
    owner = identity.stat()
    inbox = inbox_dir(identity)
    inbox.mkdir(mode=0o700, exist_ok=True)
    final = inbox / f"{at_ms}-{os.getpid()}.json"
    tmp = inbox / f".{final.name}.tmp"
    data = json.dumps({"at": at_ms, "detail": detail}, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if os.geteuid() == 0 and owner.st_uid != 0:
        # Run as root for the daemon's user: the file must be theirs to read and delete.
        for path in (inbox, tmp):
            os.chown(path, owner.st_uid, owner.st_gid)
    os.replace(tmp, final)
    return final


def _read(path: Path) -> tuple[int, dict[str, Any]]:
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError("not a selftest result (not a JSON object)")
    at, detail = doc.get("at"), doc.get("detail")
    if type(at) is not int or at <= 0 or not isinstance(detail, dict):
        raise ValueError("not a selftest result (needs a positive integer at and a detail map)")
    return at, detail


def waiting(identity: Path) -> Iterator[tuple[Path, int | None, dict[str, Any]]]:
    """Each result waiting, oldest first: (path, at_ms, detail); at_ms None for a file that
    cannot be read (the caller deletes and counts it)."""
    try:
        names = sorted(p for p in inbox_dir(identity).glob("*.json") if p.is_file())
    except OSError:
        return
    for path in names:
        try:
            at, detail = _read(path)
        except (OSError, ValueError) as exc:
            log.warning("selftest result %s cannot be sent: %s; deleted", path, exc)
            yield path, None, {}
            continue
        yield path, at, detail
