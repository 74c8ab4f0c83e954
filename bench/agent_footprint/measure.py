"""Memory and CPU of one process from outside, by pid: the only bench module that imports
psutil (its types become ours here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psutil

MIB = 1024 * 1024
T = TypeVar("T")


class ProcessGone(RuntimeError):
    """A measured process exited (psutil.NoSuchProcess, translated here); `name` says which."""

    def __init__(self, name: str, pid: int) -> None:
        """The process's row name and pid."""
        super().__init__(f"{name} (pid {pid}) exited during the measurement")
        self.name = name


@dataclass(frozen=True)
class Memory:
    """Resident memory in MiB: RSS, USS (pages only this process has) and PSS (shared pages
    divided among their sharers); peak is VmHWM, the highest RSS so far."""

    rss: float
    uss: float
    pss: float
    peak: float


@dataclass(frozen=True)
class Usage:
    """One measured window of one process: its memory at the end and its CPU over the window."""

    memory: Memory
    cpu_s: float
    wall_s: float

    @property
    def cpu_percent(self) -> float:
        """Average % of one core over the window."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def memory(pid: int) -> Memory:
    """The process's memory now."""
    proc = psutil.Process(pid)
    full = proc.memory_full_info()
    return Memory(full.rss / MIB, full.uss / MIB, full.pss / MIB, _peak_mib(pid))


def _peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process (all its threads) has used so far, with that of
    its children that have exited (the tools it runs: loginctl, ip...); a running child, such
    as the sniffer, is not in it."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def mappings(pid: int) -> dict[str, float]:
    """Resident MiB per mapped file (basename) or kind ([heap], [anon], [stack]...)."""
    out: dict[str, float] = {}
    for region in psutil.Process(pid).memory_maps(grouped=True):
        path = region.path or "[anon]"
        key = path.rsplit("/", 1)[-1] if path.startswith("/") else path
        out[key] = out.get(key, 0.0) + region.rss / MIB
    return out


def threads(pid: int) -> int:
    """How many threads the process has."""
    return int(psutil.Process(pid).num_threads())


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each of the process's threads, by thread id (the main thread's id
    is the pid)."""
    return {t.id: float(t.user_time + t.system_time) for t in psutil.Process(pid).threads()}


def process_count() -> int:
    """How many processes the machine runs now."""
    return len(psutil.pids())


def children(pid: int, running: str) -> list[int]:
    """Pids of the process's direct children whose command line contains `running`."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if any(running in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue  # a short-lived tool the agent ran, gone already
    return found


class Window:
    """CPU seconds of several processes between `Window(pids)` and `close()`."""

    def __init__(self, pids: dict[str, int]) -> None:
        """Start the window now for these named pids."""
        self._pids = pids
        self._start = time.monotonic()
        self._cpu = {name: _alive(name, pid, cpu_seconds) for name, pid in pids.items()}

    def close(self) -> dict[str, Usage]:
        """End the window: each process's CPU over it and its memory now."""
        wall = time.monotonic() - self._start
        return {
            name: Usage(
                _alive(name, pid, memory), _alive(name, pid, cpu_seconds) - self._cpu[name], wall
            )
            for name, pid in self._pids.items()
        }


def _alive(name: str, pid: int, read: Callable[[int], T]) -> T:
    try:
        return read(pid)
    except (psutil.NoSuchProcess, FileNotFoundError) as exc:
        raise ProcessGone(name, pid) from exc
