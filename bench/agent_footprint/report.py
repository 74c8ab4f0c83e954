"""The footprint table, the verdicts against issue 12's targets, and the docs section."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.agent_footprint.load import LoadResult
from bench.agent_footprint.measure import Usage
from bench.agent_footprint.reference import Profile

SECTION = "## hedgerow-agent footprint"
# Issue 12's targets. "MB" there is read as MiB, what /proc and psutil count in (1 MiB =
# 1.049 MB); the verdict says so, and how far over or under in MiB.
AGENT_RSS_MIB = 40.0
AGENT_IDLE_CPU_PERCENT = 0.5
SNIFFER_RSS_MIB = 60.0

Round = dict[str, dict[str, Usage]]  # phase ("idle", "load") -> process row -> usage


@dataclass(frozen=True)
class Row:
    """One line of the table: medians over the rounds."""

    process: str
    phase: str
    rss: float
    uss: float
    pss: float
    peak: float
    cpu_percent: float


@dataclass(frozen=True)
class Verdict:
    """One target: what was measured, the limit, and whether it was met."""

    target: str
    measured: float
    limit: float
    unit: str

    @property
    def met(self) -> bool:
        """True when the measurement is within the limit."""
        return self.measured <= self.limit

    def text(self) -> str:
        """'yes (31.2 of 40 MiB)' or 'NO: 52.1 MiB, 12.1 MiB (30 %) over 40 MiB'."""
        if self.met:
            return f"yes ({self.measured:.2f} of {self.limit:g} {self.unit})"
        over = self.measured - self.limit
        return (
            f"NO: {self.measured:.2f} {self.unit}, {over:.2f} {self.unit} "
            f"({100 * over / self.limit:.0f} %) over {self.limit:g} {self.unit}"
        )


LABELS = {
    "agent": "hedgerow-agent run",
    "sniffer": "its sniffer child",
    "ref agent": "reference: bare python, the agent's imports",
    "ref sniffer": "reference: bare python, the sniffer's imports",
}


def rows(rounds: Sequence[Round]) -> list[Row]:
    """Median of every measure over the rounds, per process and phase."""
    out: list[Row] = []
    for name in LABELS:
        for phase in ("idle", "load"):
            if name.startswith("ref") and phase == "load":
                continue  # the reference serves nothing: its load window is another idle one
            got = [r[phase][name] for r in rounds]
            out.append(
                Row(
                    name,
                    phase,
                    statistics.median(u.memory.rss for u in got),
                    statistics.median(u.memory.uss for u in got),
                    statistics.median(u.memory.pss for u in got),
                    max(u.memory.peak for u in got),
                    statistics.median(u.cpu_percent for u in got),
                )
            )
    return out


def _row(table: list[Row], name: str, phase: str) -> Row:
    return next(r for r in table if r.process == name and r.phase == phase)


def verdicts(table: list[Row]) -> list[Verdict]:
    """The three targets of issue 12, against the medians (memory: the larger phase)."""
    agent = max(_row(table, "agent", p).rss for p in ("idle", "load"))
    sniffer = max(_row(table, "sniffer", p).rss for p in ("idle", "load"))
    return [
        Verdict("agent resident (RSS)", agent, AGENT_RSS_MIB, "MiB"),
        Verdict(
            "agent CPU idle, % of one core",
            _row(table, "agent", "idle").cpu_percent,
            AGENT_IDLE_CPU_PERCENT,
            "%",
        ),
        Verdict("sniffer child resident (RSS)", sniffer, SNIFFER_RSS_MIB, "MiB"),
    ]


def table_lines(table: list[Row]) -> list[str]:
    """The markdown table, with each real process's ratio to its reference interpreter."""
    lines = [
        "| process | phase | RSS MiB | USS MiB | PSS MiB | peak RSS MiB | CPU % of one core "
        "| RSS vs reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        ref = "ref " + r.process
        ratio = "-"
        if not r.process.startswith("ref"):
            base = _row(table, ref, "idle").rss
            ratio = f"{r.rss / base:.2f}x (+{r.rss - base:.1f})"
        lines.append(
            f"| {LABELS[r.process]} | {r.phase} | {r.rss:.1f} | {r.uss:.1f} | {r.pss:.1f} "
            f"| {r.peak:.1f} | {r.cpu_percent:.3f} | {ratio} |"
        )
    return lines


def round_lines(rounds: Sequence[Round]) -> list[str]:
    """The per-round values behind the medians of the three targets."""

    def each(phase: str, name: str, cpu: bool) -> str:
        values = [r[phase][name] for r in rounds]
        return ", ".join(
            f"{u.cpu_percent:.3f}" if cpu else f"{u.memory.rss:.1f}" for u in values
        )

    return [
        f"Per round: agent CPU idle % {each('idle', 'agent', True)}; agent RSS MiB idle "
        f"{each('idle', 'agent', False)}, load {each('load', 'agent', False)}; sniffer RSS "
        f"MiB idle {each('idle', 'sniffer', False)}, load {each('load', 'sniffer', False)}.",
    ]


def verdict_lines(found: list[Verdict]) -> list[str]:
    """One line per target."""
    return [f"- {v.target}: {v.text()}" for v in found]


def profile_lines(title: str, prof: Profile) -> list[str]:
    """What each import adds to RSS in a fresh interpreter, and the biggest packages alone."""
    steps = ", ".join(f"`{name}` +{mib:.1f}" for name, mib in prof.steps[1:])
    alone = ", ".join(f"`{name}` {mib:.1f}" for name, mib in prof.packages)
    return [
        f"- {title}: the interpreter alone {prof.steps[0][1]:.1f} MiB RSS; each import adds "
        f"(MiB, in order, beyond the ones before): {steps}.",
        f"  The biggest packages they pull in, each imported alone in a fresh interpreter "
        f"(MiB; shared dependencies counted in each): {alone}.",
    ]


def mapping_lines(title: str, maps: list[tuple[str, float]], only_here: list[str]) -> list[str]:
    """The process's largest resident mappings, and the libraries the reference did not map."""
    top = ", ".join(f"`{path}` {mib:.1f}" for path, mib in maps)
    lines = [f"- {title}, resident by mapping (MiB): {top}."]
    if only_here:
        lines.append(f"  Mapped here but not in its reference: {', '.join(only_here)}.")
    return lines


def machine() -> str:
    """CPU model, cores, kernel, Python."""
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def load_lines(loads: Sequence[LoadResult]) -> list[str]:
    """What the browsing-like load did in each round."""
    return [
        f"- round {i}: {ld.sent} queries in {ld.wall_s:.0f} s ({ld.qps:.1f}/s), "
        f"{ld.answered} answered, {ld.distinct} distinct names"
        for i, ld in enumerate(loads, 1)
    ]


def write_section(path: Path, text: str) -> None:
    """Put `text` at the end of the file as the footprint section, replacing an earlier run's
    (from its heading to the next heading of any level, which is someone else's, or the end)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start = old.find("\n" + SECTION + "\n")
    if start >= 0:
        after = old.find("\n#", start + len(SECTION) + 2)
        rest = old[after:] if after >= 0 else "\n"
        old = old[:start] + rest
    kept = old.rstrip("\n") + "\n\n" if old.strip() else ""
    path.write_text(kept + text.rstrip("\n") + "\n", encoding="utf-8")
