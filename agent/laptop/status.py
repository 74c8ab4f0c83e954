"""The agent's status, as `hedgerow-agent status` shows it: asked of the running agent over
its control socket, or read from the status file it rewrites every few seconds (0644, no
secrets) when the socket cannot be reached."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from common.wire.keyfile import write_atomic

log = logging.getLogger(__name__)

FIELDS = (
    "device",
    "group",
    "site_state",
    "since",
    "policy_version",
    "filter",
    "system_resolver",
    "spool_depth",
    "oldest_unreceipted",
    "last_publish",
    "broker",
    "sniffer",
    "health",
)


class StatusBoard:
    """Writes the status file atomically; a failure is logged once, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._failed = False

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace the file with this snapshot."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(snapshot, indent=1).encode() + b"\n", 0o644)
            self._failed = False
        except OSError as exc:
            if not self._failed:
                log.warning("cannot write the status file %s: %s", self.path, exc)
            self._failed = True


def read_status_file(path: Path) -> dict[str, Any] | None:
    """The last status the agent wrote, or None if there is none."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _when(ms: object) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def render(status: dict[str, Any]) -> str:
    """The status for a person, one field per line."""
    lines = []
    for key in FIELDS:
        value = status.get(key)
        if key in ("since", "oldest_unreceipted", "last_publish"):
            value = _when(value) if key != "oldest_unreceipted" or value else "none"
        if key == "device":
            value = f"{status.get('site')}/{value} ({status.get('class')})"
        if key == "site_state" and status.get("reason"):
            value = f"{value} ({status.get('reason')})"
        if key == "health":
            value = "; ".join(f"{k}: {v}" for k, v in (value or {}).items()) or "ok"
        lines.append(f"{key}: {value}")
    if not status.get("running", True):
        lines.insert(0, "hedgerow-agent is not running (last known status)")
    return "\n".join(lines)
