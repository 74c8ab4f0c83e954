"""Refusals counted in memory by the ingest thread: what a batch adds to the per-minute counts
(hub.store.rejections), which refusals are kept in full as samples, and which devices are
throttled.

Why throttle: past the broker's ACL only an enrolled device (or whoever holds its broker
password) publishes on its topic, and every envelope there costs a signature check before it
can be refused. A device whose envelopes are refused in a burst (`rejections` in `window_s`)
has its envelopes dropped unopened for `cool_s`, counted as `throttled`, before any of that
work, while every other device's reports go on as usual. Drops count towards the burst, so a
device that keeps flooding stays throttled; one that stops is heard again `cool_s` later.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hub.store.rejections import RejectionCount, minute_of

log = logging.getLogger(__name__)

THROTTLED = "throttled"  # the reason a throttled device's dropped envelopes are counted under
Claim = tuple[str | None, str | None, str]  # (site, device, reason) of one refused message


@dataclass(frozen=True, slots=True)
class BurstLimits:
    """When a device is throttled, for how long, and how many refusals are kept in full."""

    rejections: int = 100  # refusals (or drops) of one device within window_s that throttle it
    window_s: float = 60.0
    cool_s: float = 60.0  # how long its envelopes are then dropped unopened
    samples_per_minute: int = 10  # refusals kept in full per (site, device, reason, minute)
    devices: int = 100_000  # devices remembered (the memory bound)


@dataclass(frozen=True, slots=True)
class Tally:
    """What one batch's refusals add: per-minute counts, and which refusals to keep in full."""

    counts: list[RejectionCount]
    sampled: list[bool]  # one per refusal, in order


@dataclass(slots=True)
class _Device:
    started: float  # when its current window began
    count: int = 0
    until: float = 0.0  # throttled until then (monotonic); 0: not throttled


@dataclass(slots=True)
class _Minute:
    minute_ms: int = -1
    kept: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class Bursts:
    """One per ingest thread: throttled() before opening, tally() for each batch."""

    def __init__(
        self, limits: BurstLimits = BurstLimits(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._devices: dict[tuple[str, str], _Device] = {}
        self._minute = _Minute()

    def throttled(self, site: str, device: str) -> bool:
        """True while this device's envelopes are to be dropped unopened."""
        state = self._devices.get((site, device))
        if state is None or not state.until:
            return False
        if self._clock() < state.until:
            return True
        state.until = 0.0
        log.info("no longer throttling %s/%s", site, device)
        return False

    def lift(self, site: str, device: str) -> None:
        """Forget a device's burst (its replay window was reset by the operator)."""
        if self._devices.pop((site, device), None) is not None:
            log.info("%s/%s: burst forgotten (replay window reset)", site, device)

    def tally(self, refused: Sequence[Claim], at_ms: int) -> Tally:
        """Count a batch's refusals (throttled drops included) per minute and per device, and
        pick the samples to keep in full."""
        minute_ms = minute_of(at_ms)
        if minute_ms != self._minute.minute_ms:
            self._minute = _Minute(minute_ms)
        counts: Counter[tuple[str | None, str | None, str]] = Counter(refused)
        sampled: list[bool] = []
        for site, device, reason in refused:
            sample = (site or "", device or "", reason)
            keep = self._minute.kept[sample] < self.limits.samples_per_minute
            if keep:
                self._minute.kept[sample] += 1
            sampled.append(keep)
        by_device: Counter[tuple[str, str]] = Counter()
        for (site, device, _), n in counts.items():
            if site is not None and device is not None:
                by_device[(site, device)] += n
        now = self._clock()
        for key, n in by_device.items():
            self._note(key, n, now)
        return Tally(
            [RejectionCount(s, d, r, minute_ms, n) for (s, d, r), n in counts.items()], sampled
        )

    def _note(self, key: tuple[str, str], n: int, now: float) -> None:
        limits = self.limits
        state = self._devices.get(key)
        if state is None:
            if len(self._devices) >= limits.devices:
                self._forget_quiet(now)
            state = self._devices[key] = _Device(now)
        elif now - state.started >= limits.window_s:
            state.started, state.count = now, 0
        state.count += n
        if state.count >= limits.rejections:
            if not state.until:
                log.warning(
                    "throttling %s/%s for %.0f s: %d of its envelopes refused within %.0f s "
                    "(they are dropped unopened meanwhile, counted as %s)",
                    key[0], key[1], limits.cool_s, state.count, limits.window_s, THROTTLED,
                )  # fmt: skip
            state.until = now + limits.cool_s
            state.started, state.count = now, 0  # a new window: a flood that goes on extends it

    def _forget_quiet(self, now: float) -> None:
        """Make room: forget devices neither throttled nor in a current window."""
        limits = self.limits
        self._devices = {
            k: s
            for k, s in self._devices.items()
            if s.until > now or now - s.started < limits.window_s
        }
        if len(self._devices) >= limits.devices:
            self._devices.clear()
