"""Rate limiting per flow in the sniffer child: a busy flow is one line per interval, not one
per packet."""

from __future__ import annotations

from collections.abc import Callable

from agent.laptop.sniffer.observed import Observed

FLOW_INTERVAL_S = 10.0
MAX_FLOWS = 4096  # a scan of many ports must not grow the table without bound


class FlowLimiter:
    """Admits an Observed when its flow (protocol, addresses, ports, names) has not been
    admitted within `interval_s`."""

    def __init__(self, clock: Callable[[], float], *, interval_s: float = FLOW_INTERVAL_S) -> None:
        """`clock` is monotonic seconds."""
        self._clock = clock
        self._interval_s = interval_s
        self._last: dict[Observed, float] = {}

    def admit(self, obs: Observed) -> bool:
        """Whether to pass this packet on; the names are part of the flow, so a DoT
        connection's ClientHello (with its SNI) passes after its SYN."""
        now = self._clock()
        last = self._last.get(obs)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last) >= MAX_FLOWS:
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval_s}
            if len(self._last) >= MAX_FLOWS:
                self._last.clear()  # a flood: forget, and let a few repeats through
        self._last[obs] = now
        return True
