"""Smoke test of the agent footprint benchmark (bench/agent_footprint): a very short run against
a real `hedgerow-agent run` with its sniffer child, Mosquitto, the hub and a fake upstream on
loopback; the table must come out with sane values. No timing is asserted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.agent_footprint.load import site_names, zipf_picks
from bench.agent_footprint.report import SECTION, Verdict, write_section
from bench.agent_footprint.run import main

ROW = re.compile(
    r"^\| (?P<process>[^|]+) \| (?P<phase>idle|load) \| (?P<rss>[\d.]+) \| (?P<uss>[\d.]+) "
    r"\| (?P<pss>[\d.]+) \| (?P<peak>[\d.]+) \| (?P<cpu>[\d.]+) \| (?P<ratio>[^|]+) \|$"
)


def test_a_short_run_prints_and_writes_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Something earlier\n\nkept\n")
    args = ["--rounds", "1", "--idle-s", "1", "--load-s", "2", "--settle-s", "0"]
    args += ["--qps", "20", "--names", "30", "--listen", "127.0.0.1:0", "--docs", str(docs)]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [m.groupdict() for line in out.splitlines() if (m := ROW.match(line))]
    assert [(r["process"], r["phase"]) for r in rows] == [
        ("hedgerow-agent run", "idle"),
        ("hedgerow-agent run", "load"),
        ("its sniffer child", "idle"),
        ("its sniffer child", "load"),
        ("reference: bare python, the agent's imports", "idle"),
        ("reference: bare python, the sniffer's imports", "idle"),
    ]
    for row in rows:
        rss, uss, pss = float(row["rss"]), float(row["uss"]), float(row["pss"])
        assert 5 < uss <= pss <= rss <= float(row["peak"]) < 2000, row
        assert 0 <= float(row["cpu"]) <= 200, row
    # The agent did answer the load over real UDP, and the verdicts are there.
    sent, answered = map(int, re.search(r"(\d+) queries in .* (\d+) answered", out).groups())  # type: ignore[union-attr]
    assert sent >= 2 and answered == sent
    assert out.count("- agent resident (RSS): ") == 1
    assert "sniffer child resident (RSS): " in out
    text = docs.read_text()
    assert "## Something earlier\n\nkept\n" in text
    printed = out[out.index(SECTION) :].split("\nwritten to")[0]
    assert text.endswith("kept\n\n" + printed.rstrip() + "\n")


def test_the_section_replaces_an_earlier_run(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# B\n\n{SECTION}\n\nold\n\n## Later\n\nlater\n")
    write_section(docs, f"{SECTION}\n\nnew\n")
    assert docs.read_text() == f"# B\n\n## Later\n\nlater\n\n{SECTION}\n\nnew\n"


def test_zipf_picks_favour_the_first_names_and_repeat() -> None:
    names = site_names(300)
    assert len(set(names)) == 300
    picks = zipf_picks(names, 1000, 1.0, seed=1)
    assert picks == zipf_picks(names, 1000, 1.0, seed=1)
    assert picks.count(names[0]) > picks.count(names[-1])
    assert 50 < len(set(picks)) < 300


@pytest.mark.parametrize(
    ("measured", "limit", "text"),
    [
        (31.25, 40.0, "yes (31.25 of 40 MiB)"),
        (52.0, 40.0, "NO: 52.00 MiB, 12.00 MiB (30 %) over 40 MiB"),
        (40.0, 40.0, "yes (40.00 of 40 MiB)"),
    ],
)
def test_verdict_says_by_how_much(measured: float, limit: float, text: str) -> None:
    assert Verdict("agent", measured, limit, "MiB").text() == text
