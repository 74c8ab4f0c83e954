"""Rate limiting per client address and per network: a token bucket per address, and one
shared by every address of its /24 (IPv4) or /56 (IPv6), so a pupil cannot get round the limit
with more addresses (privacy addresses, or a few static ones in the same subnet). Above either
rate, REFUSED (counted as a refused verdict with rule rate_limit).

It sits right after access control and before anything that costs work, so a flood from one
client cannot starve the others (Blocky puts its rate limiter first for the same reason). The
network prefixes are BIND's response-rate-limiting defaults (ipv4-prefix-length 24,
ipv6-prefix-length 56): the sizes one household or one device's privacy addresses come in.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any

from agent.filter import packet
from agent.filter.request import Outcome, Request
from agent.filter.spec import FilterSpec
from agent.filter.verdict import Answer, Kind, Verdict

MAX_CLIENTS = 65_536
MAX_NETWORKS = 65_536
# [tokens, last refill, the network's bucket or None]; a network's bucket has None there.
# A list, changed in place only: the fast path holds the table and inlines allow().
Bucket = list[Any]


class TokenBuckets:
    """Token buckets keyed by client address (`rate` per second, bursts up to `rate`) and, if
    `network_rate`, by the client's network (`network_rate` per second, shared)."""

    def __init__(
        self,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        network_rate: int = 0,
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 56,
    ) -> None:
        self.rate = rate
        self.network_rate = network_rate
        self.clock = clock
        self.ipv4_shift = 32 - ipv4_prefix
        self.ipv6_shift = 128 - ipv6_prefix
        self.table: dict[str, Bucket] = {}  # client -> its bucket
        self.networks: dict[tuple[int, int], Bucket] = {}  # (version, prefix) -> bucket

    @classmethod
    def for_spec(
        cls, spec: FilterSpec, clock: Callable[[], float] = time.monotonic
    ) -> TokenBuckets:
        """The buckets a FilterSpec's rate-limit settings ask for. A network may always ask
        as much as one address may (a bench's huge per-address rate is not capped by it)."""
        shared = spec.rate_limit_prefix_qps
        return cls(
            spec.rate_limit_qps,
            clock,
            network_rate=max(shared, spec.rate_limit_qps) if shared else 0,
            ipv4_prefix=spec.rate_limit_ipv4_prefix,
            ipv6_prefix=spec.rate_limit_ipv6_prefix,
        )

    def allow(self, client: str) -> bool:
        """Take a token for this client and its network; False when either has none left
        (then neither is spent)."""
        now = self.clock()
        bucket = self.table.get(client)
        if bucket is None:
            if len(self.table) >= MAX_CLIENTS:
                self._forget_idle(now)
            bucket = [float(self.rate), now, self._network_bucket(client, now)]
            self.table[client] = bucket
        rate = self.rate
        tokens = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        shared = bucket[2]
        if shared is not None:
            network_rate = self.network_rate
            left = min(float(network_rate), shared[0] + (now - shared[1]) * network_rate)
            shared[1] = now
            if left < 1.0:
                shared[0] = left
                bucket[0] = tokens
                return False
            shared[0] = left - 1.0
        bucket[0] = tokens - 1.0
        return True

    def network(self, client: str) -> tuple[int, int] | None:
        """The key of the client's network bucket: (IP version, address >> host bits)."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            return 4, int(address) >> self.ipv4_shift
        return 6, int(address) >> self.ipv6_shift

    def _network_bucket(self, client: str, now: float) -> Bucket | None:
        if not self.network_rate:
            return None
        key = self.network(client)
        if key is None:
            return None
        shared = self.networks.get(key)
        if shared is None:
            if len(self.networks) >= MAX_NETWORKS:
                self._forget_idle(now)
            shared = [float(self.network_rate), now, None]
            self.networks[key] = shared
        return shared

    def _forget_idle(self, now: float) -> None:
        # A bucket idle for a second is full again: forgetting it changes nothing. A network
        # bucket an address still holds is kept, so its addresses keep sharing one.
        busy = {k: b for k, b in self.table.items() if now - b[1] < 1.0}
        self.table.clear()
        if len(busy) < MAX_CLIENTS:
            self.table.update(busy)
        held = {id(b[2]) for b in self.table.values() if b[2] is not None}
        networks = {k: b for k, b in self.networks.items() if now - b[1] < 1.0 or id(b) in held}
        self.networks.clear()
        if len(networks) < MAX_NETWORKS:
            self.networks.update(networks)
        else:  # every network busy: start again, addresses and networks together
            self.table.clear()


class RateLimitLink:
    """REFUSED once a client, or its network, exceeds its rate."""

    name = "rate_limit"

    def __init__(self, buckets: TokenBuckets) -> None:
        self.buckets = buckets

    def resolve(self, request: Request) -> Outcome:
        """Spend a token or refuse (once: the fast path may have spent it already)."""
        if request.metered or self.buckets.allow(request.client):
            return None
        verdict = Verdict(Kind.REFUSED, request.group_name, rule="rate_limit")
        return Answer(packet.error(request.query, packet.REFUSED), verdict)
