"""Hours of the school day: "HH:MM-HH:MM" ranges in school-local time, which may wrap midnight."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

_RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Hours:
    """A daily range [start, end) in minutes after local midnight; start > end wraps midnight."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start < 1440 and 0 <= self.end < 1440) or self.start == self.end:
            raise ValueError(f"hours {self.start}-{self.end}: need two different times of day")

    def contains(self, minute: int) -> bool:
        """True if the minute of the day lies in the range."""
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


def parse_hours(text: str) -> Hours | str:
    """Parse "22:00-06:00"; return the Hours or the rule the text breaks."""
    match = _RANGE.fullmatch(text)
    if match is None:
        return 'must be "HH:MM-HH:MM" in 24-hour time, e.g. "22:00-06:00"'
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if (h1, m1) == (h2, m2):
        return "start and end must differ"
    return Hours(h1 * 60 + m1, h2 * 60 + m2)


def local_time(ms: int, zone: ZoneInfo) -> datetime:
    """A hub or device timestamp (ms since the epoch) as school-local time."""
    return datetime.fromtimestamp(ms / 1000, zone)


def minute_of_day(ms: int, zone: ZoneInfo) -> int:
    """Minutes after local midnight at that instant."""
    moment = local_time(ms, zone)
    return moment.hour * 60 + moment.minute
