"""School hours: which escalation chain is in force at a moment, in the school's own time zone
(zoneinfo, so British Summer Time moves the hours with the clocks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class SchoolHours:
    """Opening times on school days: minutes after local midnight, [start, end)."""

    start_min: int = 8 * 60
    end_min: int = 17 * 60
    days: frozenset[int] = frozenset(range(5))  # datetime.weekday(): Monday is 0
    zone: str = "Europe/London"

    def contains(self, at_ms: int) -> bool:
        """True if `at_ms` (Unix milliseconds) falls in school hours on a school day."""
        local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start_min <= minute < self.end_min


def _minutes(text: str) -> int | None:
    match = _TIME.match(text.strip())
    if match is None:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and minutes:
        return None
    return hours * 60 + minutes


def parse_hours(text: str) -> tuple[int, int] | str:
    """ "08:00-17:00" as (start, end) minutes, or the rule it breaks."""
    start_text, dash, end_text = text.partition("-")
    start, end = _minutes(start_text), _minutes(end_text)
    if not dash or start is None or end is None:
        return 'must be "HH:MM-HH:MM", e.g. "08:00-17:00" (24:00 for midnight at the end)'
    if start >= end:
        return "must start before it ends, within one day"
    return start, end


def parse_days(text: str) -> frozenset[int] | str:
    """ "Mon-Fri" or "Mon,Tue,Thu" (ranges and lists mixed) as weekday numbers, or the rule."""
    days: set[int] = set()
    rule = 'must be days such as "Mon-Fri" or "Mon,Wed,Fri" (Mon Tue Wed Thu Fri Sat Sun)'
    for part in text.lower().split(","):
        first, dash, last = (p.strip() for p in part.partition("-"))
        if first not in DAYS or (dash and last not in DAYS):
            return rule
        lo, hi = DAYS.index(first), DAYS.index(last) if dash else DAYS.index(first)
        if hi < lo:
            return f"{part.strip()!r}: a range runs forwards from Monday to Sunday"
        days.update(range(lo, hi + 1))
    return frozenset(days)


def zone_problem(name: str) -> str | None:
    """None if `name` is an IANA time zone this machine knows (e.g. Europe/London)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone such as Europe/London (the tzdata package)"
    return None
