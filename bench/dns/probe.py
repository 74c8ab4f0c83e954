"""Single DNS queries over loopback UDP: readiness, time to first answer, sanity checks."""

from __future__ import annotations

import random
import socket
import subprocess
import time

from bench.dns.dnswire import RCODE_NOERROR, TYPE_A, Reply, WireError, build_query, parse_reply

NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})


class ProbeError(RuntimeError):
    """A server never gave the answer the benchmark waited for."""


def query(port: int, name: str, qtype: int = TYPE_A, timeout: float = 0.5) -> Reply | None:
    """Ask 127.0.0.1:port one question; None on timeout or an unreadable reply."""
    ident = random.randrange(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(build_query(name, qtype, ident), ("127.0.0.1", port))
            while True:
                data = sock.recv(4096)
                reply = parse_reply(data)
                if reply.ident == ident:
                    return reply
        except (OSError, WireError):
            return None


def is_blocked(reply: Reply | None) -> bool:
    """A null answer: NOERROR with only 0.0.0.0 or ::."""
    return (
        reply is not None
        and reply.rcode == RCODE_NOERROR
        and bool(reply.addresses)
        and set(reply.addresses) <= NULL_ADDRESSES
    )


def is_resolved(reply: Reply | None, address: str) -> bool:
    """A forwarded answer carrying the fake upstream's address."""
    return reply is not None and reply.rcode == RCODE_NOERROR and address in reply.addresses


def time_to_first_answer(
    proc: subprocess.Popen[bytes],
    port: int,
    name: str,
    blocked: bool,
    started: float,
    limit: float = 120.0,
) -> float:
    """Seconds from started (time.monotonic) until the server gives the wanted answer for name.

    Asking for the last name in the list, and wanting it blocked, means the list is loaded.
    """
    while time.monotonic() - started < limit:
        if proc.poll() is not None:
            raise ProbeError(f"process {proc.pid} exited with {proc.returncode} before answering")
        reply = query(port, name, timeout=0.05)
        if blocked and is_blocked(reply):
            return time.monotonic() - started
        if not blocked and reply is not None and reply.rcode == RCODE_NOERROR:
            return time.monotonic() - started
        if reply is not None:
            time.sleep(0.01)
    raise ProbeError(f"no {'blocked' if blocked else 'good'} answer for {name} in {limit}s")


def free_port() -> int:
    """A loopback port that was free for both UDP and TCP a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise ProbeError("no free loopback port")
