"""The answer given for a blocked name: null addresses, NXDOMAIN, or a block page's address."""

from __future__ import annotations

import ipaddress

from agent.filter import packet

Ede = tuple[int, str]


class Sinkhole:
    """Builds blocked answers in the configured mode with a short TTL."""

    def __init__(self, mode: str, ttl: int) -> None:
        self.mode = mode
        self.ttl = ttl
        self._v4: bytes | None = None
        self._v6: bytes | None = None
        if mode == "null":
            self._v4, self._v6 = bytes(4), bytes(16)
        elif mode != "nxdomain":
            address = ipaddress.ip_address(mode)
            if address.version == 4:
                self._v4 = address.packed
            else:
                self._v6 = address.packed

    def reply(self, q: packet.Query, ede: Ede) -> bytes:
        """The blocked reply for this query: an address for A/AAAA, else NODATA or NXDOMAIN."""
        if self.mode == "nxdomain":
            return packet.error(q, packet.NXDOMAIN, ede)
        if q.qtype == packet.A and self._v4 is not None:
            return packet.answer(q, (self._v4,), self.ttl, ede)
        if q.qtype == packet.AAAA and self._v6 is not None:
            return packet.answer(q, (self._v6,), self.ttl, ede)
        return packet.nodata(q, ede)
