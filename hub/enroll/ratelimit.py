"""In-memory sliding-window limits on enrolment requests, per site and (much higher) overall.

Checked after proof of possession (a request must be signed by the key it names) and before
the token's scrypt, so junk never uses up a site's limit and one site cannot use up another's.
"""

from __future__ import annotations

from collections import deque

WINDOW_MS = 60_000


class RateLimiter:
    """Allows at most `per_minute` events overall and `site_per_minute` per site."""

    def __init__(self, per_minute: int, site_per_minute: int) -> None:
        self.per_minute = per_minute
        self.site_per_minute = site_per_minute
        self._all: deque[int] = deque()
        self._sites: dict[str, deque[int]] = {}
        self.limited = 0

    @staticmethod
    def _trim(times: deque[int], now_ms: int) -> None:
        while times and times[0] <= now_ms - WINDOW_MS:
            times.popleft()

    def allow(self, site: str, now_ms: int) -> bool:
        """Record an attempt; False (and counted) if it is over either limit."""
        self._trim(self._all, now_ms)
        for name in list(self._sites):  # memory stays bounded by the sites seen this minute
            self._trim(self._sites[name], now_ms)
            if not self._sites[name]:
                del self._sites[name]
        times = self._sites.setdefault(site, deque())
        if len(self._all) >= self.per_minute or len(times) >= self.site_per_minute:
            self.limited += 1
            return False
        self._all.append(now_ms)
        times.append(now_ms)
        return True

    def retry_after_s(self, site: str, now_ms: int) -> int | None:
        """Record an attempt: None if allowed, else the seconds until one would be (1-60)."""
        if self.allow(site, now_ms):
            return None
        times = [t for t in (self._sites.get(site), self._all) if t]
        oldest = min(t[0] for t in times) if times else now_ms
        return max(1, min(60, -(-(oldest + WINDOW_MS - now_ms) // 1000)))
