"""What the host says about itself, through psutil: the only module that imports it. Each call
converts psutil's types to ours and swallows the races of processes that end while read."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connection:
    """A socket with a remote end: its protocol, remote address and port, and owner's pid."""

    proto: str  # "tcp" or "udp"
    remote: str
    port: int
    pid: int | None


@dataclass(frozen=True, slots=True)
class ProcessStart:
    """A process: its pid, name and start time (seconds since the epoch)."""

    pid: int
    name: str
    started: float


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user's session as utmp records it."""

    name: str
    terminal: str | None
    started: float


def connections() -> list[Connection]:
    """Every IPv4 and IPv6 socket with a remote address (connected TCP, connected UDP)."""
    try:
        raw = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError) as exc:
        log.warning("cannot list connections: %s", exc)
        return []
    out = []
    for conn in raw:
        if not conn.raddr:
            continue
        proto = "tcp" if conn.type == socket.SOCK_STREAM else "udp"
        out.append(Connection(proto, conn.raddr.ip, conn.raddr.port, conn.pid))
    return out


def socket_owner(
    proto: str, local: str, local_port: int, remote: str, remote_port: int
) -> str | None:
    """The name of the process that holds this socket (a packet's source address and port, as
    the sniffer saw it), or None when it has gone or cannot be read."""
    kind = "tcp" if proto == "tcp" else "udp"
    try:
        raw = psutil.net_connections(kind=kind)
    except (psutil.AccessDenied, OSError):
        return None
    for conn in raw:
        if conn.pid is None or not conn.laddr or conn.laddr.port != local_port:
            continue
        if conn.laddr.ip not in (local, "0.0.0.0", "::"):
            continue
        if conn.raddr and (conn.raddr.ip, conn.raddr.port) != (remote, remote_port):
            continue
        found = process(conn.pid)
        return found.name if found is not None else None
    return None


def pids() -> set[int]:
    """The pids of every process now."""
    return set(psutil.pids())


def process(pid: int) -> ProcessStart | None:
    """The process with this pid, or None when it has gone or cannot be read."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return ProcessStart(pid, proc.name(), proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def sessions() -> list[Session]:
    """The logged-in users' sessions."""
    return [Session(u.name, u.terminal, u.started) for u in psutil.users()]


def nic_bytes() -> dict[str, tuple[int, int]]:
    """Each network interface's (received, sent) byte counters since it came up."""
    counters = psutil.net_io_counters(pernic=True, nowrap=True)
    return {name: (c.bytes_recv, c.bytes_sent) for name, c in counters.items()}
