"""Run the DNS benchmark: hedgerow-dns, dnsmasq and unbound in turn, same list, same upstream.

    .venv/bin/python -m bench.dns.run            # full run, about 10-15 minutes
    .venv/bin/python -m bench.dns.run --quick    # 20,000 domains, 3 s runs: a harness check
    .venv/bin/python -m bench.dns.run --cold-only   # only the cold-cache rounds (~3 minutes)

Writes bench/out/dns-<timestamp>.md and prints the same report.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.dns import dnsperf, process, systems
from bench.dns.cold import COLD_ALLOWED, COLD_QUERIES, ColdRound, measure_cold, write_cold_queries
from bench.dns.dnsperf import DnsperfError, DnsperfResult, Load
from bench.dns.lists import BenchData, write_bench_data
from bench.dns.probe import ProbeError, free_port
from bench.dns.process import RunningServer, ServerSpec
from bench.dns.report import Context, render
from bench.dns.scenarios import (
    MixResult,
    ReloadResult,
    SystemResult,
    interleave,
    measure_reload,
    measure_run,
    measure_system,
)

OUT = systems.REPO / "bench" / "out"
ALL_SYSTEMS = ("dnsmasq-default", "dnsmasq", "unbound", "hedgerow-dns")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hedgerow-dns vs dnsmasq vs unbound")
    parser.add_argument("--blocked", type=int, default=1_000_000, help="domains in the list")
    parser.add_argument("--allowed", type=int, default=10_000, help="allowed names")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per dnsperf run")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    parser.add_argument("--threads", type=int, default=1, help="dnsperf -T")
    parser.add_argument("--steady-qps", type=int, default=2000, help="dnsperf -Q for steady runs")
    parser.add_argument("--unbound-threads", type=int, default=1, help="unbound num-threads")
    parser.add_argument("--dnsmasq-cache", type=int, default=20_000, help="dnsmasq cache-size")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma-separated")
    parser.add_argument("--workdir", type=Path, help="keep lists and configs here")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved mix rounds, unbound and hedgerow-dns up at once (0: none)",
    )
    parser.add_argument(
        "--cold-rounds",
        type=int,
        default=2,
        help="cold-cache rounds, unbound and hedgerow-dns each started fresh (0: none)",
    )
    parser.add_argument("--cold-seconds", type=float, default=10.0, help="limit per cold run")
    parser.add_argument("--cold-allowed", type=int, default=COLD_ALLOWED, help="allowed names")
    parser.add_argument("--cold-queries", type=int, default=COLD_QUERIES, help="queries, read once")
    parser.add_argument("--cold-only", action="store_true", help="only the cold-cache rounds")
    parser.add_argument("--quick", action="store_true", help="20,000 domains, 3 s runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.blocked, args.allowed, args.duration = 20_000, 2_000, 3.0
        args.rounds = min(args.rounds, 1)
        args.cold_rounds = min(args.cold_rounds, 1)
        args.cold_allowed, args.cold_queries, args.cold_seconds = 20_000, 30_000, 3.0
    if args.cold_only and not args.cold_rounds:
        parser.error("--cold-only needs --cold-rounds of 1 or more")
    return args


def _spec_for(
    name: str, args: argparse.Namespace, workdir: Path, data: BenchData, upstream_port: int
) -> ServerSpec:
    port = free_port()
    builders: dict[str, Callable[[], ServerSpec]] = {
        "dnsmasq": lambda: systems.dnsmasq(workdir, data, port, upstream_port, args.dnsmasq_cache),
        "dnsmasq-default": lambda: systems.dnsmasq(
            workdir, data, port, upstream_port, None, "dnsmasq-default"
        ),
        "unbound": lambda: systems.unbound(
            workdir, data, port, upstream_port, args.unbound_threads
        ),
        "hedgerow-dns": lambda: systems.hedgerow(workdir, data, port, upstream_port),
    }
    return builders[name]()


def benchmark(args: argparse.Namespace, workdir: Path) -> str:
    """Generate data, run every system in turn, and return the Markdown report."""
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    loadavg_before = _loadavg()
    print(f"generating {args.blocked:,} domains in {workdir} ...")
    pool = args.cold_allowed if args.cold_rounds else 0
    data = write_bench_data(
        workdir / "data", blocked=args.blocked, allowed=args.allowed, allowed_pool=pool
    )
    cold = None
    if args.cold_rounds:
        cold = write_cold_queries(data, data.allowed_pool[: args.cold_allowed], args.cold_queries)
    load = Load(duration_s=args.duration, clients=args.clients, threads=args.threads)
    steady = Load(
        duration_s=args.duration,
        clients=args.clients,
        threads=args.threads,
        max_qps=args.steady_qps,
    )
    notes = [
        f"unbound runs {args.unbound_threads} thread(s); dnsmasq has cache-size="
        f"{args.dnsmasq_cache}; dnsmasq-default has dnsmasq's default cache (150 names), the "
        "configuration of the issue's reference figure; hedgerow-dns has [cache] "
        "max_entries=20000.",
        "CPU us/query is the server's user+system CPU time (/proc/<pid>/stat) during the run "
        "divided by answered queries: it moves less with machine load than QPS does.",
        "The steady-rate p99 and worst include the machine's scheduling delay (2 cores shared "
        "with other work and dnsperf); the fake upstream's row at the same rate shows its size.",
    ]
    results: list[SystemResult] = []
    reloads: list[ReloadResult] = []
    ceiling: MixResult | None = None
    floor: DnsperfResult | None = None
    interleaved: list[dict[str, MixResult]] = []
    cold_rounds: list[ColdRound] = []

    upstream_port = free_port()
    upstream = process.start(
        systems.upstream(workdir, upstream_port), data.probe_allowed, blocked=False
    )
    try:
        if not args.cold_only:
            ceiling, floor = _upstream_alone(upstream, data, load, steady, workdir)
        for name in [] if args.cold_only else args.systems.split(","):
            if name == "hedgerow-dns" and not systems.hedgerow_available():
                notes.append("hedgerow-dns was not runnable (`hedgerow-dns serve --help` failed).")
                print("hedgerow-dns is not runnable yet; skipped")
                continue
            spec = _spec_for(name, args, workdir, data, upstream_port)
            print(f"starting {name} ...")
            try:
                server = process.start(spec, data.probe_blocked, blocked=True)
            except ProbeError as exc:
                # One system failing to start must not lose the others' results.
                notes.append(f"{name} did not start: {exc} (log: {spec.log})")
                print(f"  {name} did not start: {exc}")
                continue
            try:
                print(
                    f"  first answer after {server.first_answer_s:.2f} s, "
                    f"RSS {server.loaded.rss_mb:.0f} MB"
                )
                results.append(measure_system(server, data, load, steady, workdir))
                if name == "hedgerow-dns":
                    reloads += _reloads(server, data, load, steady, workdir)
            except (DnsperfError, OSError) as exc:
                notes.append(f"{name} stopped mid-run: {exc} (log: {spec.log})")
                print(f"  {name} stopped mid-run: {exc}")
            finally:
                server.stop()
        names = args.systems.split(",")
        both = "unbound" in names and "hedgerow-dns" in names
        if args.rounds and both and not args.cold_only:
            interleaved = _interleaved(args, workdir, data, upstream_port, load)
        if cold is not None and both:
            print(f"cold cache, {args.cold_rounds} rounds: each server started fresh ...")
            cold_load = Load(duration_s=args.cold_seconds, clients=args.clients, threads=args.threads)
            cold_rounds = measure_cold(
                lambda name: _spec_for(name, args, workdir, data, upstream_port),
                cold,
                data.probe_blocked,
                cold_load,
                args.cold_rounds,
                workdir,
            )
    finally:
        upstream.stop()

    ctx = Context(
        started=started,
        blocked=args.blocked,
        allowed=args.allowed,
        load=load,
        steady=steady,
        cpus=os.cpu_count() or 0,
        loadavg_before=loadavg_before,
        loadavg_after=_loadavg(),
        mix_descriptions=tuple((m.name, m.description) for m in data.mixes)
        + ((("cold", cold.description),) if cold is not None else ()),
        notes=tuple(notes),
    )
    return render(
        ctx, upstream.first_answer_s, ceiling, floor, results, reloads, interleaved, cold_rounds
    )


def _upstream_alone(
    upstream: RunningServer, data: BenchData, load: Load, steady: Load, workdir: Path
) -> tuple[MixResult, DnsperfResult]:
    """The fake upstream alone: the allowed mix at full speed, and at the steady rate."""
    allowed = next(m for m in data.mixes if m.name == "allowed")
    ceiling = measure_run(upstream, allowed, load, workdir / "ceiling.out")
    print(f"fake upstream alone: {ceiling.result.qps:,.0f} QPS")
    # The same steady run against the fake upstream (the least work a Python server can do)
    # shows what the machine itself adds to latency: scheduling on 2 shared cores, pacing.
    floor = dnsperf.run(upstream.spec.port, allowed.path, steady, workdir / "floor.out")
    print(f"fake upstream at {steady.max_qps} QPS: p99 {floor.p99_ms:.3f} ms")
    return ceiling, floor


def _interleaved(
    args: argparse.Namespace, workdir: Path, data: BenchData, upstream_port: int, load: Load
) -> list[dict[str, MixResult]]:
    """unbound and hedgerow-dns up at once, the mix against each in alternating rounds."""
    print(f"interleaved mix, {args.rounds} rounds: unbound and hedgerow-dns ...")
    running: list[RunningServer] = []
    try:
        for name in ("unbound", "hedgerow-dns"):
            spec = _spec_for(name, args, workdir, data, upstream_port)
            running.append(process.start(spec, data.probe_blocked, blocked=True))
        mix = next(m for m in data.mixes if m.name == "mix")
        return interleave(running, mix, load, args.rounds, workdir)
    except (ProbeError, DnsperfError, OSError) as exc:
        print(f"  interleaved rounds stopped: {exc}")
        return []
    finally:
        for server in running:
            server.stop()


def _reloads(
    server: RunningServer, data: BenchData, load: Load, steady: Load, workdir: Path
) -> list[ReloadResult]:
    out = []
    for label, how in ((f"steady {steady.max_qps} QPS", steady), ("full speed", load)):
        result = measure_reload(server, data, how, workdir, label)
        print(f"  reload under {label}: lost {result.result.lost}, applied {result.applied}")
        out.append(result)
        if not server.alive():
            break
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    args = _parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = benchmark(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="hedgerow-bench-dns-") as tmp:
            report = benchmark(args, Path(tmp))
    path = OUT / f"dns-{time.strftime('%Y%m%d-%H%M%S')}.md"
    path.write_text(report)
    print()
    print(report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
