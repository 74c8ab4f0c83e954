"""The resolv.conf adapter: the system asks the nameservers /etc/resolv.conf names, so we
replace it with a file that names our filter, after saving the original exactly.

A symlink (to systemd-resolved's stub file or NetworkManager's) is saved as a link and put back
as one. NetworkManager or dhclient may rewrite the file after we did: current() then shows
their servers, network_resolvers() learns them, apply() puts us back, and restore() leaves the
network's newest file in place rather than an older copy (a saved link is put back, as its
owner keeps its target current).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.laptop.resolver.base import ResolverError, StateFile
from common.wire.keyfile import write_atomic

log = logging.getLogger(__name__)

MARKER = "# hedgerow-agent:"
# In our file, the network's nameservers, so a lost state file still leaves a way back.
NETWORK_NOTE = MARKER + " network nameserver "
STATE_NAME = "resolv-conf.json"
DEFAULT_MODE = 0o644


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What is at the path: a regular "file", a "symlink" (content read through it), or
    "missing"."""

    kind: str
    content: bytes = b""
    target: str = ""
    mode: int = DEFAULT_MODE

    def document(self) -> dict[str, Any]:
        """The snapshot as JSON (content in base64: it is restored byte for byte)."""
        return {
            "kind": self.kind,
            "content": base64.b64encode(self.content).decode("ascii"),
            "target": self.target,
            "mode": self.mode,
        }

    @classmethod
    def from_document(cls, doc: object) -> Snapshot:
        """The snapshot saved by document(); ResolverError if it is not one."""
        if not isinstance(doc, dict) or doc.get("kind") not in ("file", "symlink", "missing"):
            raise ResolverError(f"saved resolv.conf is not readable: {doc!r}")
        try:
            content = base64.b64decode(str(doc.get("content", "")), validate=True)
            return cls(str(doc["kind"]), content, str(doc.get("target", "")), int(doc["mode"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResolverError(f"saved resolv.conf is not readable: {exc}") from exc


def nameservers(content: bytes) -> list[str]:
    """The nameserver addresses a resolv.conf names, in order."""
    found: list[str] = []
    for line in content.decode("utf-8", "replace").splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1])
    return found


def kept_lines(content: bytes) -> list[str]:
    """The settings to keep in our file (search, domain, options...): all but nameservers and
    comments."""
    kept: list[str] = []
    for line in content.decode("utf-8", "replace").splitlines():
        words = line.split()
        if words and words[0] != "nameserver" and not words[0].startswith(("#", ";")):
            kept.append(line.strip())
    return kept


def is_ours(snapshot: Snapshot) -> bool:
    """True if the file at the path is one we wrote."""
    return snapshot.kind == "file" and snapshot.content.startswith(MARKER.encode("ascii"))


class ResolvConf:
    """Points the system at our filter by writing /etc/resolv.conf (tests pass a temp path)."""

    name = "resolv.conf"

    def __init__(self, path: Path = Path("/etc/resolv.conf"), *, state_dir: Path) -> None:
        self.path = path
        self.state = StateFile(state_dir / STATE_NAME)

    def apply(self, host: str, port: int) -> bool:
        """Write our file naming host (port 53 only: resolv.conf has no port); True if it
        changed something."""
        if port != 53:
            raise ResolverError(
                f"resolv.conf cannot name a port: the filter must listen on {host} port 53 "
                f"to be the system resolver, not port {port}"
            )
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ResolverError(f"resolv.conf needs an IP address, not {host!r}") from exc
        state = self.state.load()
        snap = self.snapshot()
        if state is not None and state.get("host") == host and self._points_here(snap, host):
            return False
        original = Snapshot.from_document(state["original"]) if state else None
        network = _pairs(state.get("network", [])) if state else []
        kept = [str(line) for line in state.get("kept", [])] if state else []
        if not is_ours(snap):
            # What is there now is the network's (or the system's) newest word.
            fresh = [(ns, 53) for ns in nameservers(snap.content) if ns != host]
            network = fresh or network
            kept = kept_lines(snap.content)
            if original is None or not (original.kind == "symlink" and snap.kind == "file"):
                original = snap
            if state is not None:
                log.info("%s was rewritten (%s); pointing it at us again", self.path, fresh)
        assert original is not None
        # Saved before the change: a crash in between leaves a record, never a lost original.
        self.state.save(
            {
                "adapter": self.name,
                "path": str(self.path),
                "host": host,
                "original": original.document(),
                "network": [list(pair) for pair in network],
                "kept": kept,
            }
        )
        mode = original.mode if original.kind == "file" else DEFAULT_MODE
        self._write(self._our_file(host, network, kept), mode)
        log.info("%s now names %s (was %s)", self.path, host, _shown(network))
        return True

    def restore(self) -> None:
        """Put the original back (or leave a newer file the network wrote since); forget it."""
        state = self.state.load()
        if state is None:
            return
        original = Snapshot.from_document(state.get("original"))
        snap = self.snapshot()
        if is_ours(snap) or (original.kind == "symlink" and snap.kind != "symlink"):
            self._put_back(original)
            log.info("%s restored (%s)", self.path, original.kind)
        else:
            log.info("%s was rewritten since; leaving the network's file", self.path)
        self.state.remove()

    def cleanup_leftovers(self) -> bool:
        """Undo a crashed run: put back the saved original, remove half-written files."""
        found = False
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            log.warning("removing a half-written %s", stale)
            _unlink(stale)
            found = True
        if self.state.load() is not None:
            log.warning("%s: undoing what a previous run left", self.path)
            self.restore()
            return True
        snap = self.snapshot()
        if is_ours(snap):
            # Our file with no record of the original: rebuild one from the notes we left.
            log.warning("%s is ours but its original is lost; rebuilding it", self.path)
            self._write(_rebuilt(snap.content), snap.mode)
            return True
        return found

    def current(self) -> str:
        """The word "ours" when the file names only our filter, else its nameservers."""
        state = self.state.load()
        servers = nameservers(self.snapshot().content)
        if state is not None and servers == [state.get("host")]:
            return "ours"
        return ", ".join(servers) if servers else "none"

    def network_resolvers(self) -> list[tuple[str, int]]:
        """The network's nameservers: from the file when someone else wrote it, else saved."""
        state = self.state.load()
        ours = state.get("host") if state else None
        snap = self.snapshot()
        if not is_ours(snap):
            fresh = [(ns, 53) for ns in nameservers(snap.content) if ns != ours]
            if fresh:
                return fresh
        return _pairs(state.get("network", [])) if state else []

    def probe_address(self) -> tuple[str, int]:
        """The first nameserver; with none, glibc asks 127.0.0.1."""
        servers = nameservers(self.snapshot().content)
        return (servers[0] if servers else "127.0.0.1", 53)

    def snapshot(self) -> Snapshot:
        """What is at the path now."""
        try:
            if self.path.is_symlink():
                target = os.readlink(self.path)
                try:
                    content = self.path.read_bytes()
                except FileNotFoundError:
                    content = b""  # a dangling link
                return Snapshot("symlink", content, target)
            info = self.path.stat()
            return Snapshot("file", self.path.read_bytes(), mode=stat.S_IMODE(info.st_mode))
        except FileNotFoundError:
            return Snapshot("missing")
        except OSError as exc:
            raise ResolverError(f"{self.path}: cannot read: {exc}") from exc

    def _points_here(self, snap: Snapshot, host: str) -> bool:
        return is_ours(snap) and nameservers(snap.content) == [host]

    @staticmethod
    def _our_file(host: str, network: list[tuple[str, int]], kept: list[str]) -> bytes:
        lines = [
            f"{MARKER} this system asks the hedgerow filter; the agent puts the original back",
            *(NETWORK_NOTE + ns for ns, _ in network),
            *kept,
            f"nameserver {host}",
        ]
        return ("\n".join(lines) + "\n").encode("utf-8")

    def _write(self, data: bytes, mode: int) -> None:
        try:
            write_atomic(self.path, data, mode)
        except OSError as exc:
            raise ResolverError(f"{self.path}: cannot write: {exc}") from exc

    def _put_back(self, original: Snapshot) -> None:
        if original.kind == "file":
            self._write(original.content, original.mode)
            return
        if original.kind == "missing":
            _unlink(self.path)
            return
        # A new link beside it, renamed over: the path is never missing, even for an instant.
        link = self.path.parent / f".{self.path.name}.hedgerow-link.tmp"
        try:
            _unlink(link)
            os.symlink(original.target, link)
            os.replace(link, self.path)
        except OSError as exc:
            raise ResolverError(f"{self.path}: cannot restore the link: {exc}") from exc


def _rebuilt(content: bytes) -> bytes:
    """A resolv.conf from our file's notes: the network's nameservers and the kept settings."""
    servers = []
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith(NETWORK_NOTE):
            servers.append(line[len(NETWORK_NOTE) :].strip())
    lines = [*kept_lines(content), *(f"nameserver {ns}" for ns in servers)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _pairs(items: object) -> list[tuple[str, int]]:
    if not isinstance(items, list):
        raise ResolverError(f"saved network resolvers are not a list: {items!r}")
    return [(str(host), int(port)) for host, port in items]


def _shown(network: list[tuple[str, int]]) -> str:
    return ", ".join(host for host, _ in network) or "nothing"


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise ResolverError(f"{path}: cannot remove: {exc}") from exc
