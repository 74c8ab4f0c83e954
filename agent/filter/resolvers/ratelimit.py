"""Per-client rate limiting: a token bucket per address; above the rate, REFUSED (counted).

It sits right after access control and before anything that costs work, so a flood from one
client cannot starve the others (Blocky puts its rate limiter first for the same reason).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.filter import packet
from agent.filter.request import Outcome, Request
from agent.filter.verdict import Answer, Kind, Verdict

MAX_CLIENTS = 65_536


class TokenBuckets:
    """Token buckets keyed by client address: `rate` per second, bursts up to `rate`."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        # client -> [tokens, last refill]; changed in place only (the fast path holds it)
        self.table: dict[str, list[float]] = {}

    def allow(self, client: str) -> bool:
        """Take a token for this client; False when it has none left."""
        now = self.clock()
        bucket = self.table.get(client)
        if bucket is None:
            if len(self.table) >= MAX_CLIENTS:
                self._forget_idle(now)
            self.table[client] = [self.rate - 1.0, now]
            return True
        tokens = min(float(self.rate), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        # A client idle for a second has a full bucket again: forgetting it changes nothing.
        busy = {k: b for k, b in self.table.items() if now - b[1] < 1.0}
        self.table.clear()
        if len(busy) < MAX_CLIENTS:
            self.table.update(busy)


class RateLimitLink:
    """REFUSED once a client exceeds rate_limit_qps."""

    name = "rate_limit"

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    def resolve(self, request: Request) -> Outcome:
        """Spend a token or refuse (once: the fast path may have spent it already)."""
        if request.metered or self.buckets.allow(request.client):
            return None
        verdict = Verdict(Kind.REFUSED, request.group_name, rule="rate_limit")
        return Answer(packet.error(request.query, packet.REFUSED), verdict)
