"""Running dnsperf against one port and reading its statistics and per-query latencies.

dnsperf reports totals, QPS and min/average/max latency; with ``-v`` it also prints one line
per answer (``> NOERROR name A 0.000344``), from which p50/p99/p99.9 are computed here.
"""

from __future__ import annotations

import re
import subprocess
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DNSPERF = "dnsperf"


class DnsperfError(RuntimeError):
    """dnsperf failed or printed no statistics."""


@dataclass(frozen=True)
class Load:
    """How dnsperf drives the server; bounded by a time limit and/or a number of file runs."""

    duration_s: float
    clients: int = 4
    threads: int = 1
    outstanding: int = 100
    max_qps: int | None = None
    runs: int | None = None
    timeout_s: float = 5.0


@dataclass(frozen=True)
class DnsperfResult:
    """One dnsperf run, latencies in milliseconds."""

    sent: int
    completed: int
    lost: int
    qps: float
    avg_ms: float
    max_ms: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    rcodes: dict[str, int]


def command(port: int, queries: Path, load: Load) -> list[str]:
    """The dnsperf command line for one run (always against 127.0.0.1)."""
    argv = [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-v"]
    argv += ["-c", str(load.clients), "-T", str(load.threads), "-q", str(load.outstanding)]
    argv += ["-l", f"{load.duration_s:g}", "-t", f"{load.timeout_s:g}"]
    if load.max_qps is not None:
        argv += ["-Q", str(load.max_qps)]
    if load.runs is not None:
        argv += ["-n", str(load.runs)]
    return argv


def start(port: int, queries: Path, load: Load, output: Path) -> subprocess.Popen[bytes]:
    """Start dnsperf in the background, its stdout (one line per query) going to output."""
    with output.open("wb") as out:
        return subprocess.Popen(command(port, queries, load), stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen[bytes], load: Load, output: Path) -> DnsperfResult:
    """Wait for a started dnsperf (bounded), then parse and delete its output."""
    try:
        proc.wait(load.duration_s + load.timeout_s + 60)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise DnsperfError(f"dnsperf ran past its limit of {load.duration_s}s") from exc
    try:
        with output.open(encoding="ascii", errors="replace") as lines:
            return parse(lines)
    finally:
        output.unlink(missing_ok=True)


def run(port: int, queries: Path, load: Load, output: Path) -> DnsperfResult:
    """Run dnsperf to completion and return its result."""
    return finish(start(port, queries, load, output), load, output)


_STAT = re.compile(
    r"^\s*(Queries sent|Queries completed|Queries lost|Queries per second):\s+([\d.]+)"
)
_LATENCY = re.compile(r"Average Latency \(s\):\s+([\d.]+) \(min [\d.]+, max ([\d.]+)\)")
_RCODE = re.compile(r"([A-Z]+) (\d+) \(")


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return ordered[index]


def parse(lines: Iterable[str]) -> DnsperfResult:
    """Read dnsperf -v output: per-query lines, then the Statistics block."""
    latencies = array("d")
    stats: dict[str, float] = {}
    rcodes: dict[str, int] = {}
    avg = worst = 0.0
    tail: list[str] = []
    for line in lines:
        if line.startswith("> "):
            fields = line.split()
            if fields[1] != "T":  # "T" marks a timed-out query, counted in "lost"
                latencies.append(float(fields[-1]))
        elif match := _STAT.match(line):
            stats[match.group(1)] = float(match.group(2))
        elif match := _LATENCY.search(line):
            avg, worst = float(match.group(1)), float(match.group(2))
        elif "Response codes:" in line:
            rcodes = {code: int(n) for code, n in _RCODE.findall(line)}
        else:
            tail = [*tail[-20:], line]
    if "Queries sent" not in stats:
        raise DnsperfError("dnsperf printed no statistics:\n" + "".join(tail))
    ordered = sorted(latencies)
    return DnsperfResult(
        sent=int(stats["Queries sent"]),
        completed=int(stats.get("Queries completed", 0)),
        lost=int(stats.get("Queries lost", 0)),
        qps=stats.get("Queries per second", 0.0),
        avg_ms=avg * 1000,
        max_ms=worst * 1000,
        p50_ms=_percentile(ordered, 0.50) * 1000,
        p99_ms=_percentile(ordered, 0.99) * 1000,
        p999_ms=_percentile(ordered, 0.999) * 1000,
        rcodes=rcodes,
    )
