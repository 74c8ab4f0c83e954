"""Processes that start between samples, by name: the `processes_new` and `flagged_apps`
summary fields and the `flagged_app` findings.

A process that starts and ends between two samples (~10 s) is not seen: psutil reads /proc, it
is not told about starts. The kernel's proc connector would be, at the price of root and netlink."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from agent.laptop.activity import host


def app_name(name: str) -> str:
    """A process name as the flagged list spells it: lower case, without ".exe"."""
    lower = name.lower()
    return lower[:-4] if lower.endswith(".exe") else lower


class ProcessWatch:
    """Remembers which pids it has seen, so each scan yields only the processes new since."""

    def __init__(self) -> None:
        """Take the processes running now as the baseline: they are not new."""
        self._names: dict[int, str] = {}
        for start in self._read(host.pids()):
            self._names[start.pid] = start.name

    def scan(self) -> list[host.ProcessStart]:
        """The processes started since the last scan (or the baseline)."""
        now = host.pids()
        for gone in set(self._names) - now:
            del self._names[gone]
        new = self._read(now - set(self._names))
        for start in new:
            self._names[start.pid] = start.name
        return new

    def name_of(self, pid: int | None) -> str | None:
        """The name of a process seen in a scan, or None."""
        return None if pid is None else self._names.get(pid)

    @staticmethod
    def _read(pids: Iterable[int]) -> list[host.ProcessStart]:
        """What host.process says about each pid still there."""
        found = (host.process(pid) for pid in sorted(pids))
        return [start for start in found if start is not None]


def count_names(starts: Iterable[host.ProcessStart]) -> Counter[str]:
    """How many processes of each name."""
    return Counter(start.name for start in starts)
