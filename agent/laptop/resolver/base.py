"""The boundary between the agent and the operating system's resolver settings: the Protocol
every adapter provides (docs/agent-platforms.md), its error, and the state file it keeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from common.errors import HedgerowError
from common.wire.keyfile import write_json

log = logging.getLogger(__name__)


class ResolverError(HedgerowError):
    """The system resolver could not be read or changed; the message says which and why."""


class SystemResolver(Protocol):
    """One way of pointing the OS at our filter, undoing it, and telling what it uses now."""

    name: str  # "resolv.conf" or "systemd-resolved"

    def apply(self, host: str, port: int) -> bool:
        """Point the OS at host:port; idempotent. True if it changed something. Remembers what
        the network (DHCP) gave before, for network_resolvers() and restore()."""
        ...

    def restore(self) -> None:
        """Undo everything apply() did (clean stop, uninstall)."""
        ...

    def cleanup_leftovers(self) -> bool:
        """At start: undo what a run that crashed left behind; True if it found any."""
        ...

    def current(self) -> str:
        """The word "ours", or what the OS uses now ("192.168.1.1, 8.8.8.8")."""
        ...

    def network_resolvers(self) -> list[tuple[str, int]]:
        """What the network gave (DHCP), never ours: beacon servers ("system"), captive portals."""
        ...

    def probe_address(self) -> tuple[str, int]:
        """Where the OS sends its queries now (the tamper watch asks there)."""
        ...


class StateFile:
    """An adapter's record of what it changed, in the agent's state directory: JSON, written
    atomically, so a crash leaves either the old record or the new one, never half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """The record, or None when there is none (nothing of ours is in place)."""
        try:
            document = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ResolverError(f"{self.path}: cannot read the resolver state: {exc}") from exc
        if not isinstance(document, dict):
            raise ResolverError(f"{self.path}: the resolver state is not a JSON object")
        return document

    def save(self, document: dict[str, Any]) -> None:
        """Replace the record (before the change it describes is made)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, document, private=False)
        except OSError as exc:
            raise ResolverError(f"{self.path}: cannot write the resolver state: {exc}") from exc

    def remove(self) -> None:
        """Forget the record (after everything it describes is undone)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise ResolverError(f"{self.path}: cannot remove the resolver state: {exc}") from exc
