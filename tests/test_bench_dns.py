"""Smoke tests of the DNS benchmark's harness (bench/dns): fake upstream, lists, dnsperf parsing.

Real processes on loopback (the fake upstream, dig, dnsmasq); no timing is asserted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.dns import dnsperf, probe, systems
from bench.dns.dnsperf import DnsperfResult
from bench.dns.dnswire import TYPE_A, build_query, read_question
from bench.dns.lists import generate_names, write_bench_data
from bench.dns.process import Memory, start
from bench.dns.report import interleaved_medians, interleaved_table, latency_verdict
from bench.dns.scenarios import MixResult, sanity
from bench.dns.upstream import ANSWER_A, ANSWER_AAAA, answer


@pytest.fixture
def upstream_port(tmp_path: Path) -> Iterator[int]:
    """A running fake upstream on a free loopback port."""
    port = probe.free_port()
    server = start(systems.upstream(tmp_path, port), "ready.example", blocked=False, limit=30)
    yield port
    server.stop()


def _dig(port: int, *args: str) -> str:
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return out.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("+short", "school.example", "A"), ANSWER_A),
        (("+short", "school.example", "AAAA"), ANSWER_AAAA),
        (("+short", "+tcp", "school.example", "A"), ANSWER_A),
        (("school.example", "MX"), "ANSWER: 0"),
    ],
)
def test_fake_upstream_answers_dig(
    upstream_port: int, args: tuple[str, ...], expected: str
) -> None:
    assert expected in _dig(upstream_port, *args)


@given(st.binary(max_size=64))
def test_fake_upstream_never_raises_on_junk(data: bytes) -> None:
    answer(data)


@given(st.from_regex(r"[a-z0-9]{1,20}(\.[a-z0-9]{1,20}){0,4}", fullmatch=True))
def test_query_question_round_trip(name: str) -> None:
    msg = build_query(name, TYPE_A, 7)
    question = read_question(msg)
    assert (question.end, question.qtype) == (len(msg), TYPE_A)


def test_generated_lists_are_valid_and_deterministic(tmp_path: Path) -> None:
    data = write_bench_data(tmp_path / "a", blocked=3000, allowed=300, mix_queries=1000)
    again = write_bench_data(tmp_path / "b", blocked=3000, allowed=300, mix_queries=1000)
    plain = data.plain_list.read_text().splitlines()
    assert len(plain) == len(set(plain)) == 3000
    assert plain == again.plain_list.read_text().splitlines()
    assert data.dnsmasq_conf.read_text().splitlines()[0] == f"address=/{plain[0]}/0.0.0.0"
    assert (
        data.unbound_conf.read_text().splitlines()[-1] == f'local-zone: "{plain[-1]}." always_null'
    )
    for mix in data.mixes:
        lines = mix.path.read_text().splitlines()
        assert lines and all(line.endswith(" A") for line in lines)
    blocked, allowed = generate_names(3000, 300, seed=1)
    listed = set(blocked)
    for name in allowed:
        labels = name.split(".")
        assert not any(".".join(labels[i:]) in listed for i in range(len(labels)))


DNSPERF_OUTPUT = """\
[Status] Sending queries (to 127.0.0.1:5353)
> NOERROR a.example A 0.000100
> NOERROR b.example A 0.000300
> T c.example A
> NOERROR d.example A 0.002000
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 3 (100.00%)
  Run time (s):         1.000000
  Queries per second:   3.000000

  Average Latency (s):  0.000800 (min 0.000100, max 0.002000)
"""


def test_dnsperf_output_is_parsed() -> None:
    result = dnsperf.parse(DNSPERF_OUTPUT.splitlines())
    assert (result.sent, result.completed, result.lost) == (4, 3, 1)
    assert result.qps == 3.0
    assert result.rcodes == {"NOERROR": 3}
    assert result.max_ms == pytest.approx(2.0)
    assert result.p50_ms == pytest.approx(0.3)
    assert result.p99_ms == pytest.approx(2.0)


def test_dnsmasq_blocks_listed_and_forwards_the_rest(tmp_path: Path, upstream_port: int) -> None:
    data = write_bench_data(tmp_path / "data", blocked=500, allowed=50, mix_queries=200)
    spec = systems.dnsmasq(tmp_path, data, probe.free_port(), upstream_port)
    server = start(spec, data.probe_blocked, blocked=True, limit=30)
    try:
        assert server.first_answer_s > 0
        assert server.loaded.rss_mb > 0
        assert sanity(server, data)
    finally:
        server.stop()


def test_dnsperf_runs_against_the_fake_upstream(tmp_path: Path, upstream_port: int) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("one.example A\ntwo.example AAAA\n")
    load = dnsperf.Load(duration_s=5, clients=1, runs=1)
    result = dnsperf.run(upstream_port, queries, load, tmp_path / "out.txt")
    assert (result.sent, result.lost) == (2, 0)


def test_free_port_is_loopback_and_unused() -> None:
    port = probe.free_port()
    assert 1024 <= port < 65536
    assert probe.query(port, "nobody.example", timeout=0.1) is None


@pytest.mark.parametrize(
    ("mine", "references", "verdict"),
    [
        (0.3, [("unbound", 2.0)], "yes"),
        (0.9, [("fake upstream", 0.2), ("unbound", 0.4)], "NO"),
        (0.9, [("fake upstream", 1.2), ("unbound", 0.4)], "NO"),
        (0.9, [("fake upstream", 1.2), ("unbound", 0.7)], "not measurable here"),
        (0.9, [], "NO"),
    ],
)
def test_latency_target_verdict(
    mine: float, references: list[tuple[str, float]], verdict: str
) -> None:
    assert latency_verdict(mine, 0.5, references)[0] == verdict


def _mix(qps: float, cpu: float) -> MixResult:
    result = DnsperfResult(1, 1, 0, qps, 0.1, 0.2, 0.1, 0.2, 0.2, {"NOERROR": 1})
    return MixResult("mix", result, Memory(50.0, 60.0), cpu)


def test_interleaved_rounds_report_median_ratios() -> None:
    rounds = [
        {"hedgerow-dns": _mix(900.0, 10.0), "unbound": _mix(1000.0, 9.0)},
        {"hedgerow-dns": _mix(1100.0, 10.0), "unbound": _mix(1000.0, 11.0)},
        {"hedgerow-dns": _mix(1000.0, 10.0), "unbound": _mix(1000.0, 10.0)},
    ]
    qps, cpu = interleaved_medians(rounds)
    assert qps == pytest.approx(1.0) and cpu == pytest.approx(1.0)
    table = interleaved_table(rounds)
    assert table[2].startswith("| 1 | 900 | 1,000 | 0.90x | 10.0 | 9.0 | 0.90x |")
    assert table[-1] == "Median over the rounds: QPS ratio 1.00x, CPU ratio 1.00x."
