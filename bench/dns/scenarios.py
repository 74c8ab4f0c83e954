"""What is measured on each system: the three mixes, a steady rate, and a reload under load."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.dns import dnsperf, probe
from bench.dns.dnsperf import DnsperfResult, Load
from bench.dns.lists import BenchData, Mix
from bench.dns.process import Memory, RunningServer
from bench.dns.upstream import ANSWER_A

RELOAD_CHECK_DOMAIN = "hedgerow-bench.example"


@dataclass(frozen=True)
class MixResult:
    """One mix on one system: dnsperf's figures, the server's memory afterwards, and the
    server's CPU time per answered query (steadier than QPS on a shared machine)."""

    mix: str
    result: DnsperfResult
    memory: Memory
    cpu_us_per_query: float


@dataclass
class SystemResult:
    """Everything measured on one system."""

    name: str
    version: str
    first_answer_s: float
    loaded: Memory
    sane: bool
    loadavg: str
    mixes: dict[str, MixResult] = field(default_factory=dict)
    steady: DnsperfResult | None = None
    peak: Memory | None = None


@dataclass(frozen=True)
class ReloadResult:
    """dnsperf's view of a run during which the list was reloaded (SIGHUP) several times."""

    load: str
    sighups: int
    result: DnsperfResult
    applied: bool
    survived: bool
    peak: Memory


def sanity(server: RunningServer, data: BenchData) -> bool:
    """The server blocks a listed name and forwards an allowed one to the fake upstream."""
    port = server.spec.port
    blocked = probe.is_blocked(probe.query(port, data.probe_blocked))
    allowed = probe.is_resolved(probe.query(port, data.probe_allowed, timeout=2.0), ANSWER_A)
    return blocked and allowed


def measure_run(server: RunningServer, mix: Mix, load: Load, output: Path) -> MixResult:
    """One dnsperf run of a mix, with the server's memory after it and CPU used during it."""
    cpu_before = server.cpu_seconds()
    result = dnsperf.run(server.spec.port, mix.path, load, output)
    cpu = server.cpu_seconds() - cpu_before
    per_query = cpu / result.completed * 1e6 if result.completed else 0.0
    return MixResult(mix.name, result, server.memory(), per_query)


def measure_mixes(
    server: RunningServer, mixes: tuple[Mix, ...], load: Load, workdir: Path
) -> dict[str, MixResult]:
    """Run each mix in turn; the allowed mix gets one untimed pass first to warm the cache."""
    results: dict[str, MixResult] = {}
    out = workdir / f"dnsperf-{server.spec.port}.out"
    for mix in mixes:
        if mix.name == "allowed":
            warm = Load(duration_s=120, clients=load.clients, threads=load.threads, runs=1)
            dnsperf.run(server.spec.port, mix.path, warm, out)
        measured = measure_run(server, mix, load, out)
        results[mix.name] = measured
        result = measured.result
        print(
            f"  {server.spec.name:13} {mix.name:8} {result.qps:>10,.0f} QPS  p99 "
            f"{result.p99_ms:.2f} ms  lost {result.lost}  CPU {measured.cpu_us_per_query:.1f} us/q"
        )
    return results


def measure_system(
    server: RunningServer, data: BenchData, load: Load, steady: Load, workdir: Path
) -> SystemResult:
    """Sanity check, the three mixes at full speed, then the realistic mix at a steady rate."""
    result = SystemResult(
        name=server.spec.name,
        version=server.spec.version,
        first_answer_s=server.first_answer_s,
        loaded=server.loaded,
        sane=sanity(server, data),
        loadavg=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )
    result.mixes = measure_mixes(server, data.mixes, load, workdir)
    mix = next(m for m in data.mixes if m.name == "mix")
    result.steady = dnsperf.run(server.spec.port, mix.path, steady, workdir / "steady.out")
    print(
        f"  {server.spec.name:13} steady {steady.max_qps} QPS: p99 "
        f"{result.steady.p99_ms:.3f} ms  max {result.steady.max_ms:.2f} ms"
    )
    result.peak = server.memory()
    return result


def interleave(
    servers: list[RunningServer], mix: Mix, load: Load, rounds: int, workdir: Path
) -> list[dict[str, MixResult]]:
    """The mix against every server in alternating rounds (the order flips each round), all
    servers up at once and warmed first: a ratio taken round by round shares the machine's
    drift, which one run per system in turn does not."""
    warm = Load(duration_s=120, clients=load.clients, threads=load.threads, runs=1)
    for server in servers:
        dnsperf.run(server.spec.port, mix.path, warm, workdir / "interleave-warm.out")
    results: list[dict[str, MixResult]] = []
    for k in range(rounds):
        order = servers if k % 2 == 0 else servers[::-1]
        this: dict[str, MixResult] = {}
        for server in order:
            out = workdir / f"interleave-{server.spec.port}.out"
            this[server.spec.name] = measured = measure_run(server, mix, load, out)
            print(
                f"  round {k + 1} {server.spec.name:13} {measured.result.qps:>10,.0f} QPS  "
                f"CPU {measured.cpu_us_per_query:.1f} us/q"
            )
        results.append(this)
    return results


def measure_reload(
    server: RunningServer,
    data: BenchData,
    load: Load,
    workdir: Path,
    label: str,
    sighups: int = 3,
) -> ReloadResult:
    """Run the mix under load and send SIGHUP sighups times, each after adding a new name.

    Afterwards every added name must be blocked (the reloads really happened) and the
    process must still be running.
    """
    mix = next(m for m in data.mixes if m.name == "mix")
    out = workdir / "reload.out"
    slug = "".join(c if c.isalnum() else "-" for c in label)
    started = time.monotonic()
    proc = dnsperf.start(server.spec.port, mix.path, load, out)
    added: list[str] = []
    try:
        for i in range(sighups):
            # Spread the reloads over the middle of the run, leaving time for the last one.
            time.sleep(
                max(0.0, started + load.duration_s * (i + 1) / (sighups + 2) - time.monotonic())
            )
            name = f"reload-{slug}-{i}.{RELOAD_CHECK_DOMAIN}"
            with data.plain_list.open("a", encoding="ascii") as listfile:
                listfile.write(f"{name}\n")
            added.append(name)
            server.signal(signal.SIGHUP)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result = dnsperf.finish(proc, load, out)
    applied = _wait_blocked(server.spec.port, added, limit=15.0)
    survived = server.alive()
    return ReloadResult(
        load=label,
        sighups=sighups,
        result=result,
        applied=applied,
        survived=survived,
        peak=server.memory() if survived else Memory(0.0, 0.0),
    )


def _wait_blocked(port: int, names: list[str], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(probe.is_blocked(probe.query(port, n)) for n in names):
            return True
        time.sleep(0.2)
    return False
