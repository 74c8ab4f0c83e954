"""A browsing-like DNS load: a few hundred distinct names, picked with Zipf popularity (a few
sites asked again and again, a long tail asked once or twice), A and AAAA for each pick as a
browser asks, sent at a steady few queries per second over real UDP."""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass

from bench.dns.dnswire import TYPE_A, TYPE_AAAA, build_query

REPLY_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LoadResult:
    """What the load sent and how much of it was answered."""

    sent: int
    answered: int
    distinct: int
    wall_s: float

    @property
    def qps(self) -> float:
        """Queries sent per second over the run."""
        return self.sent / self.wall_s if self.wall_s > 0 else 0.0


def site_names(count: int) -> list[str]:
    """`count` distinct, plausible host names, most popular first."""
    shapes = ("www.site{}.example", "cdn{}.static.example", "api.app{}.example", "news{}.example")
    return [shapes[i % len(shapes)].format(i) for i in range(count)]


def zipf_picks(names: list[str], picks: int, exponent: float, seed: int) -> list[str]:
    """`picks` names drawn with Zipf weights 1/rank**exponent (deterministic for a seed)."""
    weights = [1.0 / (rank**exponent) for rank in range(1, len(names) + 1)]
    return random.Random(seed).choices(names, weights=weights, k=picks)


def browse(
    address: tuple[str, int], names: list[str], qps: float, seconds: float, seed: int = 12
) -> LoadResult:
    """Ask `address` (host, port) A then AAAA for Zipf-picked names at `qps` queries/s for
    `seconds`; each query waits for its reply (or REPLY_TIMEOUT_S) before the next is due."""
    total = max(2, int(qps * seconds))
    picks = zipf_picks(names, (total + 1) // 2, 1.0, seed)
    queries = [(name, qtype) for name in picks for qtype in (TYPE_A, TYPE_AAAA)][:total]
    sent = answered = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        for i, (name, qtype) in enumerate(queries):
            # Paced against the start, so a slow reply does not stretch the whole run.
            delay = started + i / qps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ident = i & 0xFFFF
            sock.sendto(build_query(name, qtype, ident), address)
            sent += 1
            answered += _await_reply(sock, ident)
    return LoadResult(sent, answered, len(set(picks)), time.monotonic() - started)


def _await_reply(sock: socket.socket, ident: int) -> int:
    """1 if the reply with this id came before the timeout, else 0 (stale replies skipped)."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return 0
        if len(data) >= 2 and int.from_bytes(data[:2], "big") == ident:
            return 1
    return 0
