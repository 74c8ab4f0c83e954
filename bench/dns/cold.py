"""The cold-cache scenario: a large set of distinct names, so about a quarter of the queries
are names the server has not seen, each server started fresh, unbound in the same run.

The query file (written by `write_cold_queries`): COLD_ALLOWED allowed names and COLD_BLOCKED
names of the 1M list, Zipf (s=1) popularity over each, 20 % of the queries blocked, 70 % A and
30 % AAAA; dnsperf reads it once (`-n 1`, bounded by the run's seconds), so every server sees
the same first-seen names in the same order. Rounds alternate the order of the two servers,
and each server is started anew for its run (an empty cache), so a ratio taken round by round
shares the machine's drift. What is measured besides QPS and CPU per query: hedgerow-dns's
whole-process RSS and peak (VmHWM) after its cold run, against the 64 MB target.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.dns.dnsperf import DnsperfError, Load
from bench.dns.lists import BenchData, Mix, zipf_sample
from bench.dns.probe import ProbeError
from bench.dns.process import ServerSpec, start
from bench.dns.scenarios import MixResult, measure_run

HEDGEROW = "hedgerow-dns"
COLD_ALLOWED = 200_000
COLD_BLOCKED = 20_000
COLD_QUERIES = 300_000  # about a quarter of them first seen (a (name, type) not asked before)
BLOCKED_SHARE = 0.2
AAAA_SHARE = 0.3


@dataclass(frozen=True)
class ColdQueries:
    """The cold query file and what it holds."""

    path: Path
    queries: int
    first_seen: int  # queries whose (name, type) comes for the first time in the file
    description: str


@dataclass(frozen=True)
class ColdRound:
    """One round: each server started fresh and run through the cold file once."""

    results: dict[str, MixResult]


def write_cold_queries(
    data: BenchData,
    allowed_names: Sequence[str],
    queries: int = COLD_QUERIES,
    blocked: int = COLD_BLOCKED,
    seed: int = 20261202,
) -> ColdQueries:
    """Draw the cold mix from `allowed_names` and the first `blocked` names of the list."""
    rng = random.Random(seed)
    with data.plain_list.open(encoding="ascii") as listed:
        blocked_names = [line.strip() for _, line in zip(range(blocked), listed, strict=False)]
    n_blocked = round(queries * BLOCKED_SHARE)
    names = zipf_sample(blocked_names, n_blocked, 1.0, rng)
    names += zipf_sample(list(allowed_names), queries - n_blocked, 1.0, rng)
    rng.shuffle(names)
    seen: set[tuple[str, str]] = set()
    lines: list[str] = []
    for name in names:
        qtype = "AAAA" if rng.random() < AAAA_SHARE else "A"
        seen.add((name, qtype))
        lines.append(f"{name} {qtype}\n")
    path = data.directory / "queries-cold.txt"
    with path.open("w", encoding="ascii") as out:
        out.writelines(lines)
    description = (
        f"cold: {len(allowed_names):,} allowed and {len(blocked_names):,} listed names, Zipf "
        f"(s=1), {BLOCKED_SHARE:.0%} blocked, {1 - AAAA_SHARE:.0%} A / {AAAA_SHARE:.0%} AAAA; "
        f"{queries:,} queries read once, {len(seen) / queries:.0%} of them first seen; each "
        "server started fresh"
    )
    return ColdQueries(path, queries, len(seen), description)


def measure_cold(
    specs: Callable[[str], ServerSpec],
    cold: ColdQueries,
    probe_blocked: str,
    load: Load,
    rounds: int,
    workdir: Path,
) -> list[ColdRound]:
    """`rounds` rounds of unbound and hedgerow-dns, order alternating, each started fresh."""
    once = Load(
        duration_s=load.duration_s,
        clients=load.clients,
        threads=load.threads,
        outstanding=load.outstanding,
        runs=1,
    )
    mix = Mix("cold", cold.description, cold.path)
    out: list[ColdRound] = []
    for k in range(rounds):
        names = ("unbound", HEDGEROW) if k % 2 == 0 else (HEDGEROW, "unbound")
        results: dict[str, MixResult] = {}
        for name in names:
            spec = specs(name)
            try:
                server = start(spec, probe_blocked, blocked=True)
            except ProbeError as exc:
                print(f"  cold round {k + 1}: {name} did not start: {exc}")
                continue
            try:
                measured = measure_run(server, mix, once, workdir / "cold.out")
            except (DnsperfError, OSError) as exc:
                print(f"  cold round {k + 1}: {name} stopped: {exc}")
                continue
            finally:
                server.stop()
            results[name] = measured
            r = measured.result
            print(
                f"  cold round {k + 1} {name:13} {r.qps:>10,.0f} QPS  lost {r.lost}  "
                f"CPU {measured.cpu_us_per_query:.1f} us/q  RSS {measured.memory.rss_mb:.0f} MB"
                f" (peak {measured.memory.hwm_mb:.0f})"
            )
        out.append(ColdRound(results))
    return out


def cold_medians(rounds: Sequence[ColdRound]) -> tuple[float, float] | None:
    """(median QPS ratio, median CPU ratio unbound / hedgerow-dns) over complete rounds."""
    complete = [r.results for r in rounds if HEDGEROW in r.results and "unbound" in r.results]
    if not complete:
        return None
    qps = [r[HEDGEROW].result.qps / r["unbound"].result.qps for r in complete]
    cpu = [r["unbound"].cpu_us_per_query / r[HEDGEROW].cpu_us_per_query for r in complete]
    return statistics.median(qps), statistics.median(cpu)


def cold_table(rounds: Sequence[ColdRound]) -> list[str]:
    """Round by round: QPS, CPU per query, hedgerow-dns's memory; then the medians."""
    lines = [
        "| round | hedgerow-dns QPS | unbound QPS | QPS ratio | hedgerow-dns CPU us/q "
        "| unbound CPU us/q | hedgerow-dns RSS MB (peak) | lost (hedgerow-dns / unbound) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, one in enumerate(rounds, 1):
        mine, theirs = one.results.get(HEDGEROW), one.results.get("unbound")
        if mine is None or theirs is None:
            lines.append(f"| {k} | incomplete round | | | | | | |")
            continue
        ratio = mine.result.qps / theirs.result.qps if theirs.result.qps else 0.0
        lines.append(
            f"| {k} | {mine.result.qps:,.0f} | {theirs.result.qps:,.0f} | {ratio:.2f}x "
            f"| {mine.cpu_us_per_query:.1f} | {theirs.cpu_us_per_query:.1f} "
            f"| {mine.memory.rss_mb:.0f} ({mine.memory.hwm_mb:.0f}) "
            f"| {mine.result.lost} / {theirs.result.lost} |"
        )
    medians = cold_medians(rounds)
    if medians is not None:
        lines += [
            "",
            f"Median over the rounds: QPS ratio {medians[0]:.2f}x, CPU ratio (unbound / "
            f"hedgerow-dns) {medians[1]:.2f}x.",
        ]
    return lines


def cold_targets(rounds: Sequence[ColdRound], blocked: int) -> list[tuple[str, str, bool]]:
    """The issue's cold-cache targets: (target, measured, met)."""
    medians = cold_medians(rounds)
    if medians is None:
        return []
    rss = max(r.results[HEDGEROW].memory.hwm_mb for r in rounds if HEDGEROW in r.results)
    count = "1M" if blocked == 1_000_000 else f"{blocked:,} (target is for 1M)"
    return [
        ("cold QPS ≥ 1x unbound, fresh servers", f"median {medians[0]:.2f}x", medians[0] >= 1.0),
        (f"cold peak RSS ≤ 64 MB with {count} domains", f"{rss:.0f} MB", rss <= 64),
    ]
