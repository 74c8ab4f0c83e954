"""The benchmark's Markdown report: results per system and mix, ratios, and the targets."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.dns.cold import ColdRound, cold_table, cold_targets
from bench.dns.dnsperf import DnsperfResult, Load
from bench.dns.scenarios import MixResult, ReloadResult, SystemResult

HEDGEROW = "hedgerow-dns"


@dataclass(frozen=True)
class Context:
    """How the run was set up, for the report's header."""

    started: str
    blocked: int
    allowed: int
    load: Load
    steady: Load
    cpus: int
    loadavg_before: str
    loadavg_after: str
    mix_descriptions: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = ()


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _mb(value: float) -> str:
    return f"{value:.0f}"


def results_table(systems: Sequence[SystemResult]) -> list[str]:
    """System x mix: QPS, latencies, lost queries, memory, time to first answer."""
    lines = [
        "| system | mix | QPS | p50 ms | p99 ms | max ms | lost | CPU us/query | RSS MB "
        "| first answer s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in systems:
        for mix in system.mixes.values():
            r = mix.result
            lines.append(
                f"| {system.name} | {mix.mix} | {r.qps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                f"| {r.max_ms:.1f} | {r.lost} | {mix.cpu_us_per_query:.1f} "
                f"| {_mb(mix.memory.rss_mb)} "
                f"| {system.first_answer_s:.2f} |"
            )
    return lines


def memory_table(systems: Sequence[SystemResult]) -> list[str]:
    """Memory after loading the list, after all runs, and the peak."""
    lines = [
        "| system | version | first answer s | RSS loaded MB | RSS end MB | peak (VmHWM) MB "
        "| sanity | load avg at start |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for s in systems:
        end = s.peak.rss_mb if s.peak else 0.0
        hwm = s.peak.hwm_mb if s.peak else s.loaded.hwm_mb
        lines.append(
            f"| {s.name} | {s.version} | {s.first_answer_s:.2f} | {_mb(s.loaded.rss_mb)} "
            f"| {_mb(end)} | {_mb(hwm)} | {'ok' if s.sane else 'FAILED'} | {s.loadavg} |"
        )
    return lines


def ratio_table(systems: Sequence[SystemResult], ceiling: MixResult | None) -> list[str]:
    """hedgerow-dns against each reference, per mix: QPS ratio and CPU-per-query ratio.

    Both read "higher is better for hedgerow-dns": the CPU ratio is the reference's CPU time
    per query divided by hedgerow-dns's.
    """
    by_name = {s.name: s for s in systems}
    hedgerow = by_name.get(HEDGEROW)
    if hedgerow is None:
        return ["hedgerow-dns was not measured in this run, so there are no ratios."]
    refs: list[tuple[str, dict[str, MixResult]]] = [
        (ref, by_name[ref].mixes)
        for ref in ("unbound", "dnsmasq", "dnsmasq-default")
        if ref in by_name
    ]
    if ceiling is not None:
        refs.append(("fake upstream", {mix: ceiling for mix in hedgerow.mixes}))
    head = "| mix | " + " | ".join(f"QPS vs {r} | CPU/query vs {r}" for r, _ in refs) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(refs)]
    for mix, mine in hedgerow.mixes.items():
        cells = []
        for _, theirs_by_mix in refs:
            theirs = theirs_by_mix.get(mix)
            if theirs is None:
                cells += ["n/a", "n/a"]
                continue
            cells.append(_ratio(mine.result.qps, theirs.result.qps))
            cells.append(_ratio(theirs.cpu_us_per_query, mine.cpu_us_per_query))
        lines.append(f"| {mix} | " + " | ".join(cells) + " |")
    return lines


def steady_table(
    systems: Sequence[SystemResult], offered: int | None, floor: DnsperfResult | None
) -> list[str]:
    """The realistic mix at a fixed offered rate, with the fake upstream at the same rate."""
    lines = [
        "| system | offered QPS | achieved QPS | p50 ms | p99 ms | p99.9 ms | worst ms | lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("fake upstream (Python reference)", floor)] + [(s.name, s.steady) for s in systems]
    for name, r in rows:
        if r is None:
            continue
        lines.append(
            f"| {name} | {offered} | {r.qps:,.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} "
            f"| {r.p999_ms:.3f} | {r.max_ms:.2f} | {r.lost} |"
        )
    return lines


def reload_table(reloads: Sequence[ReloadResult]) -> list[str]:
    """Queries sent and lost while the list was reloaded."""
    lines = [
        "| load | SIGHUPs | sent | lost | p99 ms | worst ms | new names blocked | still running "
        "| peak MB |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in reloads:
        d = r.result
        lines.append(
            f"| {r.load} | {r.sighups} | {d.sent:,} | {d.lost} | {d.p99_ms:.3f} | {d.max_ms:.1f} "
            f"| {'yes' if r.applied else 'NO'} | {'yes' if r.survived else 'NO'} "
            f"| {_mb(r.peak.hwm_mb)} |"
        )
    return lines


def latency_verdict(
    mine: float, limit: float, references: Sequence[tuple[str, float]]
) -> tuple[str, str]:
    """yes / NO, or "not measurable here" when every reference misses the limit too."""
    if mine <= limit:
        return "yes", ""
    if references and all(value > limit for _, value in references):
        shown = ", ".join(f"{name} {value:.2f}" for name, value in references)
        return "not measurable here", f" (same run: {shown})"
    return "NO", ""


def targets_table(
    systems: Sequence[SystemResult],
    reloads: Sequence[ReloadResult],
    blocked: int,
    floor: DnsperfResult | None,
    interleaved: Sequence[dict[str, MixResult]] = (),
) -> list[str]:
    """The issue's targets for hedgerow-dns against what this run measured.

    A steady-rate latency target that the fake upstream and every other server also miss in
    this run is reported as not measurable: the machine, not hedgerow-dns, sets that figure.
    """
    by_name = {s.name: s for s in systems}
    mine = by_name.get(HEDGEROW)
    if mine is None or "mix" not in mine.mixes:
        return ["hedgerow-dns was not measured in this run."]
    rows: list[tuple[str, str, str]] = []
    qps = mine.mixes["mix"].result.qps
    for ref, factor in (("unbound", 1.0), ("dnsmasq-default", 10.0), ("dnsmasq", 10.0)):
        other = by_name.get(ref)
        if other and "mix" in other.mixes:
            theirs = other.mixes["mix"].result.qps
            measured = f"{qps:,.0f} vs {theirs:,.0f} ({_ratio(qps, theirs)})"
            rows.append((f"mix QPS ≥ {factor:g}x {ref}", measured, _yes(qps >= factor * theirs)))
    if interleaved:
        median, _ = interleaved_medians(interleaved)
        rows.append(
            (
                "mix QPS ≥ 1x unbound, interleaved rounds",
                f"median {median:.2f}x over {len(interleaved)} rounds",
                _yes(median >= 1.0),
            )
        )
    if mine.steady:
        refs = [("fake upstream", floor)] + [(s.name, s.steady) for s in systems if s is not mine]
        known = [(name, r) for name, r in refs if r is not None]
        for what, limit, value, of_refs in (
            ("p99", 0.5, mine.steady.p99_ms, [(n, r.p99_ms) for n, r in known]),
            ("worst", 5.0, mine.steady.max_ms, [(n, r.max_ms) for n, r in known]),
        ):
            verdict, note = latency_verdict(value, limit, of_refs)
            rows.append((f"steady {what} ≤ {limit:g} ms", f"{value:.2f} ms{note}", verdict))
    rss = max([mine.loaded.rss_mb] + [m.memory.rss_mb for m in mine.mixes.values()])
    count = "1M" if blocked == 1_000_000 else f"{blocked:,} (target is for 1M)"
    rows.append((f"RSS ≤ 64 MB with {count} domains", f"{rss:.0f} MB", _yes(rss <= 64)))
    first = mine.first_answer_s
    rows.append(("time to first answer ≤ 2 s", f"{first:.2f} s", _yes(first <= 2.0)))
    for r in reloads:
        ok = r.result.lost == 0 and r.applied and r.survived
        rows.append((f"reload drops nothing ({r.load})", f"{r.result.lost} lost", _yes(ok)))
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {verdict} |" for t, m, verdict in rows]
    return lines


def interleaved_table(rounds: Sequence[dict[str, MixResult]]) -> list[str]:
    """Round by round, hedgerow-dns against unbound on the mix, and the median ratios."""
    lines = [
        "| round | hedgerow-dns QPS | unbound QPS | QPS ratio | hedgerow-dns CPU us/q "
        "| unbound CPU us/q | CPU ratio (unbound / hedgerow-dns) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, one in enumerate(rounds, 1):
        mine, theirs = one[HEDGEROW], one["unbound"]
        lines.append(
            f"| {k} | {mine.result.qps:,.0f} | {theirs.result.qps:,.0f} "
            f"| {_ratio(mine.result.qps, theirs.result.qps)} | {mine.cpu_us_per_query:.1f} "
            f"| {theirs.cpu_us_per_query:.1f} "
            f"| {_ratio(theirs.cpu_us_per_query, mine.cpu_us_per_query)} |"
        )
    qps, cpu = interleaved_medians(rounds)
    lines += ["", f"Median over the rounds: QPS ratio {qps:.2f}x, CPU ratio {cpu:.2f}x."]
    return lines


def interleaved_medians(rounds: Sequence[dict[str, MixResult]]) -> tuple[float, float]:
    """(median QPS ratio, median CPU-efficiency ratio) of hedgerow-dns against unbound."""
    qps = [r[HEDGEROW].result.qps / r["unbound"].result.qps for r in rounds]
    cpu = [r["unbound"].cpu_us_per_query / r[HEDGEROW].cpu_us_per_query for r in rounds]
    return statistics.median(qps), statistics.median(cpu)


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def render(
    ctx: Context,
    upstream_first_answer_s: float,
    ceiling: MixResult | None,
    floor: DnsperfResult | None,
    systems: Sequence[SystemResult],
    reloads: Sequence[ReloadResult],
    interleaved: Sequence[dict[str, MixResult]] = (),
    cold: Sequence[ColdRound] = (),
) -> str:
    """The whole report as Markdown."""
    load = ctx.load
    out = [
        f"# DNS benchmark, {ctx.started}",
        "",
        f"{ctx.blocked:,} generated blocked domains, {ctx.allowed:,} allowed; {ctx.cpus} CPUs; "
        f"load average before {ctx.loadavg_before}, after {ctx.loadavg_after}.",
        f"dnsperf: {load.duration_s:g} s per run, {load.clients} clients, {load.threads} thread, "
        f"{load.outstanding} outstanding, on the same machine (it competes for the CPUs).",
        "",
        "Mixes:",
        "",
        *[f"- **{name}**: {desc}" for name, desc in ctx.mix_descriptions],
        "",
    ]
    if not systems and cold:  # --cold-only
        out += _cold_section(cold, ctx.blocked)
        out += ["## Notes", "", *[f"- {n}" for n in ctx.notes], ""] if ctx.notes else []
        return "\n".join(out)
    out += [
        "## Throughput and latency at full load",
        "",
        *results_table(systems),
        "",
    ]
    if ceiling:
        out += [
            f"Fake upstream alone (allowed mix straight at it): {ceiling.result.qps:,.0f} QPS, "
            f"p99 {ceiling.result.p99_ms:.2f} ms, {ceiling.cpu_us_per_query:.1f} us CPU/query, "
            f"first answer {upstream_first_answer_s:.2f} s. It does the least a Python+uvloop "
            "server can (no cache, no list, reply from the query's bytes): a practical ceiling "
            "for a Python filter on this machine with dnsperf beside it.",
            "",
        ]
    out += [
        "## Ratios: hedgerow-dns against each reference (higher is better for hedgerow-dns)",
        "",
        *ratio_table(systems, ceiling),
        "",
        "## Memory and start-up",
        "",
        *memory_table(systems),
        "",
        f"## Steady {ctx.steady.max_qps} QPS, realistic mix, {ctx.steady.duration_s:g} s",
        "",
        *steady_table(systems, ctx.steady.max_qps, floor),
        "",
    ]
    if reloads:
        out += ["## List reload (SIGHUP) under load, hedgerow-dns", "", *reload_table(reloads), ""]
    if interleaved:
        out += [
            "## Interleaved mix: hedgerow-dns and unbound up at once, alternating rounds",
            "",
            *interleaved_table(interleaved),
            "",
        ]
    out += _cold_section(cold, ctx.blocked)
    out += [
        "## Targets (hedgerow-dns)",
        "",
        *targets_table(systems, reloads, ctx.blocked, floor, interleaved),
        "",
    ]
    if ctx.notes:
        out += ["## Notes", "", *[f"- {n}" for n in ctx.notes], ""]
    return "\n".join(out)


def _cold_section(cold: Sequence[ColdRound], blocked: int) -> list[str]:
    if not cold:
        return []
    targets = ["| target | measured | met |", "|---|---|---|"]
    targets += [f"| {t} | {m} | {_yes(ok)} |" for t, m, ok in cold_targets(cold, blocked)]
    return [
        "## Cold cache: each server started fresh, the cold file read once",
        "",
        *cold_table(cold),
        "",
        *targets,
        "",
    ]
