"""The laptop's site state over time: what it is, since when, why, and the seconds spent in
each state in the current summary window."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.laptop.site.beacon import SiteState

LOCATION = {  # the summary's and heartbeat's `location`
    SiteState.ON_SITE: "onsite",
    SiteState.OFF_SITE: "offsite",
    SiteState.CAPTIVE: "offsite",
    SiteState.UNKNOWN: "unknown",
}


class SiteTracker:
    """The current state; `enter()` says whether it changed."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.state = SiteState.UNKNOWN
        self.since_ms = int(clock() * 1000)
        self.reason = "not checked yet"
        self.network: str | None = None  # keyed hash of the network's identity
        self._seconds = {s.value: 0.0 for s in SiteState}
        self._counted_at = monotonic()

    @property
    def location(self) -> str:
        """ "onsite", "offsite" or "unknown"."""
        return LOCATION[self.state]

    def enter(self, state: SiteState, reason: str) -> SiteState | None:
        """Now in `state` because of `reason`; the previous state if it changed, else None."""
        self._count()
        self.reason = reason
        if state is self.state:
            return None
        previous, self.state = self.state, state
        self.since_ms = int(self._clock() * 1000)
        return previous

    def take_seconds(self) -> dict[str, int]:
        """Seconds in each state since the last call ("on_site_s", ...), then zero."""
        self._count()
        seconds, self._seconds = self._seconds, {s.value: 0.0 for s in SiteState}
        return {f"{k}_s": int(v) for k, v in seconds.items()}

    def _count(self) -> None:
        now = self._monotonic()
        self._seconds[self.state.value] += now - self._counted_at
        self._counted_at = now
