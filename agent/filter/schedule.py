"""Time windows for category blocking, e.g. "mon-fri 08:00-16:00" (local time)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from common.errors import HedgerowError
from common.tomlconfig import toml_value

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*(\S+)\s+(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s*$")


class ScheduleError(HedgerowError):
    """A schedule string does not follow 'DAYS HH:MM-HH:MM'."""


@dataclass(frozen=True, slots=True)
class Window:
    """Days of the week (0 = Monday) and minutes since midnight; end < start spans midnight."""

    days: frozenset[int]
    start: int
    end: int

    def active(self, weekday: int, minute: int) -> bool:
        """True if this window covers the given weekday and minute."""
        if self.start <= self.end:
            return weekday in self.days and self.start <= minute < self.end
        yesterday = (weekday - 1) % 7
        return (weekday in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """One or more windows; blocking applies while any is active."""

    text: str
    windows: tuple[Window, ...]

    def active(self, when: datetime) -> bool:
        """True if `when` (local time) falls inside a window."""
        minute = when.hour * 60 + when.minute
        weekday = when.weekday()
        return any(w.active(weekday, minute) for w in self.windows)


def _days(spec: str) -> frozenset[int]:
    if spec in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ScheduleError(f"{toml_value(part)} is not a day or day range (mon..sun, daily)")
        lo = DAYS.index(first)
        hi = DAYS.index(last) if last else lo
        span = (hi - lo) % 7
        days.update((lo + i) % 7 for i in range(span + 1))
    return frozenset(days)


def parse_schedule(text: str) -> Schedule:
    """Parse 'mon-fri 08:00-16:00', several windows joined by ';' (e.g. 'sat 10:00-12:00')."""
    windows = []
    for piece in text.lower().split(";"):
        match = _WINDOW.match(piece)
        if not match:
            raise ScheduleError(f'{toml_value(piece.strip())} is not "DAYS HH:MM-HH:MM"')
        h1, m1, h2, m2 = (int(match.group(i)) for i in range(2, 6))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ScheduleError(f"{toml_value(piece.strip())} has a time outside 00:00-24:00")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            raise ScheduleError(f"{toml_value(piece.strip())} is an empty window")
        windows.append(Window(_days(match.group(1)), start, end))
    return Schedule(text, tuple(windows))
