"""Login attempts rate-limited per account and per client address, in memory.

Five failures in fifteen minutes for one account (twenty for one address: a school's NAT puts
many people behind one) and the next attempt waits a minute; each further failure doubles the
wait, up to an hour. A success clears the account's failures. In memory because one process
serves the dashboard; a restart forgets, which costs an attacker a restart they cannot cause.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """When failures start to cost a wait, and how long."""

    window_s: float = 15 * 60
    account_failures: int = 5
    address_failures: int = 20
    first_wait_s: float = 60
    max_wait_s: float = 3600


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)


class LoginLimiter:
    """Counts failed logins per account and per address; says how long the next must wait."""

    def __init__(
        self, policy: LimitPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or LimitPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, _Failures] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._by_key.get(key)
        if failures is None:
            return deque()
        while failures.times and now - failures.times[0] > self.policy.window_s:
            failures.times.popleft()
        if not failures.times:
            del self._by_key[key]
            return deque()
        return failures.times

    def _wait(self, key: str, threshold: int, now: float) -> float:
        times = self._recent(key, now)
        if len(times) < threshold:
            return 0.0
        wait: float = min(
            self.policy.first_wait_s * 2.0 ** (len(times) - threshold), self.policy.max_wait_s
        )
        return max(0.0, times[-1] + wait - now)

    def wait_s(self, account: str, address: str) -> float:
        """Seconds before a login for this account from this address may be tried (0: now)."""
        now = self._clock()
        with self._lock:
            return max(
                self._wait("u:" + account, self.policy.account_failures, now),
                self._wait("a:" + address, self.policy.address_failures, now),
            )

    def failed(self, account: str, address: str) -> None:
        """Count a failed login."""
        now = self._clock()
        with self._lock:
            for key in ("u:" + account, "a:" + address):
                self._by_key.setdefault(key, _Failures()).times.append(now)
                # Bound memory under a flood of names: keep what decides the wait.
                times = self._by_key[key].times
                while len(times) > 64:
                    times.popleft()

    def succeeded(self, account: str) -> None:
        """A correct password: the account's failures are forgotten (the address's stay)."""
        with self._lock:
            self._by_key.pop("u:" + account, None)
