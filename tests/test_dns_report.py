"""The DNS summariser: aggregation (table-driven), immediate events, the hot-path hand-off, and
summaries reaching a real Mosquitto sealed."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent.dns.arp import read_arp
from agent.dns.client_reports import DnsReporter
from agent.dns.client_window import (
    ImmediateEvents,
    Window,
    WindowLimits,
    registrable_domain,
)
from agent.filter.querylog import QueryRecord, QuerySink
from common.errors import ConfigError
from common.wire import Kind, payload
from tests.services import Mosquitto
from tests.test_report_publisher import opened_in_order
from tests.test_report_support import make_device, subscriber

PUPIL = ("10.0.0.5", "pupils")
STAFF = ("10.0.0.9", "staff")


def rec(
    who: tuple[str, str],
    t: int,
    qname: str,
    verdict: str = "resolved",
    category: str | None = None,
) -> QueryRecord:
    """A query record from `who` at time t (ms)."""
    return QueryRecord(t, who[0], who[1], qname, 1, verdict, category, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "example.com"),
        ("www.example.com", "example.com"),
        ("a.b.c.example.com.", "example.com"),
        ("news.bbc.co.uk", "bbc.co.uk"),
        ("bbc.co.uk", "bbc.co.uk"),
        ("www.ox.ac.uk", "ox.ac.uk"),
        ("portal.school.lea.sch.uk", "school.lea.sch.uk"),
        ("www.abc.net.au", "abc.net.au"),
        ("cdn.shop.com.au", "shop.com.au"),
        ("co.uk", "co.uk"),
        ("localhost", "localhost"),
        ("5.0.0.10.in-addr.arpa", "in-addr.arpa"),
        ("WWW.Example.COM", "example.com"),
    ],
)
def test_registrable_domain(name: str, expected: str) -> None:
    assert registrable_domain(name) == expected


SUMMARY_CASES: list[tuple[str, list[QueryRecord], dict[str, Any]]] = [
    (
        "counts-by-verdict-and-category",
        [
            rec(PUPIL, 100, "www.bbc.co.uk"),
            rec(PUPIL, 150, "bbc.co.uk", "cached"),
            rec(PUPIL, 120, "bad.example", "blocked", "adult"),
            rec(PUPIL, 130, "www.google.com", "rewritten", "safesearch"),
        ],
        {
            "counts": {"resolved": 1, "cached": 1, "blocked": 1, "rewritten": 1},
            "categories": {"adult": 1},  # a SafeSearch rewrite is no attempt
            "first_seen": 100,
            "last_seen": 150,
        },
    ),
    (
        "blocked-names-with-counts-most-first",
        [
            rec(PUPIL, 1, "x.bad.example", "blocked", "adult"),
            rec(PUPIL, 2, "y.bad.example", "blocked", "gambling"),
            rec(PUPIL, 3, "y.bad.example", "blocked", "gambling"),
            rec(PUPIL, 4, "z.bad.example", "blocked", None),
        ],
        {
            "blocked": [
                {"name": "y.bad.example", "category": "gambling", "count": 2},
                {"name": "x.bad.example", "category": "adult", "count": 1},
                {"name": "z.bad.example", "category": "uncategorised", "count": 1},
            ],
            "top_allowed": [],
        },
    ),
    (
        "bypass-is-blocked-filtered-is-allowed-errors-only-counted",
        [
            rec(PUPIL, 1, "mask.icloud.com", "bypass", "bypass"),
            rec(PUPIL, 2, "www.google.co.uk", "filtered", "safesearch"),
            rec(PUPIL, 3, "down.example", "servfail"),
            rec(PUPIL, 4, "x.example", "refused"),
        ],
        {
            "counts": {"bypass": 1, "filtered": 1, "servfail": 1, "refused": 1},
            "categories": {"bypass": 1},
            "blocked": [{"name": "mask.icloud.com", "category": "bypass", "count": 1}],
            "top_allowed": [{"domain": "google.co.uk", "count": 1}],
        },
    ),
    (
        "top-allowed-grouped-by-registrable-domain",
        [
            rec(PUPIL, 1, "www.bbc.co.uk"),
            rec(PUPIL, 2, "news.bbc.co.uk"),
            rec(PUPIL, 3, "static.bbc.co.uk"),
            rec(PUPIL, 4, "a.example.com"),
            rec(PUPIL, 5, "b.example.com"),
            rec(PUPIL, 6, "wikipedia.org"),
        ],
        {
            "top_allowed": [
                {"domain": "bbc.co.uk", "count": 3},
                {"domain": "example.com", "count": 2},
                {"domain": "wikipedia.org", "count": 1},
            ],
            "blocked": [],
        },
    ),
]


@pytest.mark.parametrize(
    ("records", "expected"), [c[1:] for c in SUMMARY_CASES], ids=[c[0] for c in SUMMARY_CASES]
)
def test_window_summary(records: list[QueryRecord], expected: dict[str, Any]) -> None:
    window = Window(start_ms=0)
    for record in records:
        window.add(record)
    (summary,) = window.summaries(1000, {})
    for key, value in expected.items():
        assert summary[key] == value, key
    assert summary["client"] == {"ip": "10.0.0.5", "group": "pupils"}
    assert (summary["v"], summary["source"], summary["start"], summary["end"]) == (
        1,
        "dns",
        0,
        1000,
    )
    payload.encode(Kind.SUMMARY, summary)  # fits the hub's schema


def test_one_summary_per_client_with_mac_when_known() -> None:
    window = Window(start_ms=0)
    window.add(rec(PUPIL, 1, "a.com"))
    window.add(rec(STAFF, 2, "b.com"))
    window.add(rec(PUPIL, 3, "c.com"))
    summaries = window.summaries(10, {"10.0.0.9": "aa:bb:cc:dd:ee:ff"})
    clients = [s["client"] for s in summaries]
    assert clients == [
        {"ip": "10.0.0.5", "group": "pupils"},
        {"ip": "10.0.0.9", "group": "staff", "mac": "aa:bb:cc:dd:ee:ff"},
    ]
    assert [s["counts"]["resolved"] for s in summaries] == [2, 1]


def test_limits_keep_a_summary_small_and_valid() -> None:
    limits = WindowLimits(max_clients=2, max_blocked=3, max_allowed=4, max_keys=5, top_n=2)
    window = Window(0, limits)
    for i in range(20):
        window.add(rec(PUPIL, i, f"n{i}.bad.example", "blocked", f"cat{i}"))
        window.add(rec(PUPIL, i, f"site{i}.com"))
    window.add(rec(STAFF, 1, "a.com"))
    window.add(rec(("10.0.0.99", "guests"), 1, "a.com"))  # a third client: over the limit
    pupil, _staff = window.summaries(100, {})
    assert pupil["counts"] == {"blocked": 20, "resolved": 20}  # counts stay exact
    assert len(pupil["blocked"]) == 3
    assert sum(pupil["categories"].values()) == 20 and len(pupil["categories"]) == 6
    assert pupil["categories"]["other"] == 15
    assert len(pupil["top_allowed"]) == 2
    assert window.clients_dropped == 1
    payload.encode(Kind.SUMMARY, pupil)


def test_immediate_events_are_rate_limited_per_client_and_name() -> None:
    events = ImmediateEvents(["self_harm", "iwf"], max_per_window=3)
    records = [
        rec(PUPIL, 1, "harm.example", "blocked", "self_harm"),
        rec(PUPIL, 2, "harm.example", "blocked", "self_harm"),  # repeat: suppressed
        rec(STAFF, 3, "harm.example", "blocked", "self_harm"),  # other client: sent
        rec(PUPIL, 4, "games.example", "blocked", "gaming"),  # not immediate
        rec(PUPIL, 5, "ok.example", "resolved", "self_harm"),  # not blocked
        rec(PUPIL, 6, "abuse.example", "blocked", "iwf"),
        rec(PUPIL, 7, "more.example", "blocked", "iwf"),  # over the window's cap
    ]
    sent = [
        events.check(r, "aa:bb:cc:dd:ee:ff" if r.client_ip == STAFF[0] else None) for r in records
    ]
    assert [e is not None for e in sent] == [True, False, True, False, False, True, False]
    assert events.suppressed == 2
    first = sent[0]
    assert first == {
        "v": 1,
        "type": "blocked",
        "category": "self_harm",
        "name": "harm.example",
        "client": {"ip": "10.0.0.5", "group": "pupils"},
        "at": 1,
        "count": 1,
    }
    assert sent[2] is not None and sent[2]["client"]["mac"] == "aa:bb:cc:dd:ee:ff"
    for event in sent:
        if event is not None:
            payload.encode(Kind.EVENT, event)
    events.new_window()
    assert events.check(records[1], None) is not None


def test_arp_table(tmp_path: Path) -> None:
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address       HW type     Flags       HW address            Mask     Device\n"
        "10.0.0.5         0x1         0x2         AA:BB:CC:00:11:22     *        eth0\n"
        "10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        eth0\n"
        "garbage\n"
        "10.0.0.7         0x1         zz          aa:bb:cc:00:11:23     *        eth0\n"
    )
    assert read_arp(arp) == {"10.0.0.5": "aa:bb:cc:00:11:22"}
    assert read_arp(tmp_path / "absent") == {}


def test_offer_never_blocks_and_counts_drops(tmp_path: Path) -> None:
    device = make_device(tmp_path, "mqtt://127.0.0.1:1")
    reporter = DnsReporter(device.directory, 60, ["self_harm"], tmp_path / "spool", queue_size=1000)
    sink: QuerySink = reporter
    record = rec(PUPIL, 1, "a.com")
    # Nothing drains the queue (not started): offer must still return at once every time.
    done = threading.Event()

    def hot_path() -> None:
        for _ in range(100_000):
            sink.offer(record)
        done.set()

    thread = threading.Thread(target=hot_path)
    thread.start()
    thread.join(60)
    assert done.is_set()
    stats = reporter.stats()
    assert (stats.offered, stats.dropped_queue_full) == (100_000, 99_000)


@pytest.mark.parametrize("interval", [0, -5, 1.5])
def test_bad_interval_is_a_config_error(tmp_path: Path, interval: Any) -> None:
    device = make_device(tmp_path, "mqtt://127.0.0.1:1")
    with pytest.raises(ConfigError, match="interval_s"):
        DnsReporter(device.directory, interval, [], tmp_path / "spool")


def test_reports_reach_the_broker_sealed(tmp_path: Path, broker: Mosquitto) -> None:
    device = make_device(tmp_path, "mqtt://127.0.0.1:1")  # [report] hub overrides mqtt.json
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address HW type Flags HW address Mask Device\n"
        "10.0.0.5 0x1 0x2 02:00:00:00:00:05 * eth0\n"
    )
    with subscriber(broker.url) as sub:
        reporter = DnsReporter(
            device.directory,
            3600,
            ["self_harm"],
            tmp_path / "spool",
            arp_path=arp,
            broker_url=broker.url,
            min_backoff_s=1,
            max_backoff_s=1,
        )
        reporter.start()
        try:
            reporter.offer(rec(PUPIL, 1, "www.bbc.co.uk"))
            reporter.offer(rec(PUPIL, 2, "harm.example", "blocked", "self_harm"))
            reporter.offer(rec(PUPIL, 3, "harm.example", "blocked", "self_harm"))
            # The immediate event arrives long before the hour-long window ends.
            sub.wait_for(lambda m: any(x.topic.endswith("/event") for x in m))
        finally:
            reporter.stop()
        sub.wait_for(lambda m: any(x.topic.endswith("/summary") for x in m))
        sub.wait_for(lambda m: any(x.topic.endswith("/heartbeat") for x in m))
        opened = opened_in_order(device, sub.messages)
    by_kind = {o["kind"]: o for o in opened}
    assert [o["kind"] for o in opened] == [Kind.EVENT, Kind.SUMMARY, Kind.HEARTBEAT]
    event = by_kind[Kind.EVENT]
    assert (event["category"], event["name"], event["at"]) == ("self_harm", "harm.example", 2)
    assert event["client"] == {"ip": "10.0.0.5", "group": "pupils", "mac": "02:00:00:00:00:05"}
    summary = by_kind[Kind.SUMMARY]
    assert summary["counts"] == {"resolved": 1, "blocked": 2}
    assert summary["blocked"] == [{"name": "harm.example", "category": "self_harm", "count": 2}]
    assert summary["top_allowed"] == [{"domain": "bbc.co.uk", "count": 1}]
    beat = by_kind[Kind.HEARTBEAT]
    assert beat["clean_stop"] is True and beat["filter_active"] is True
    assert beat["software"].startswith("hedgerow-dns ")
    stats = reporter.stats()
    assert (stats.summaries, stats.events, stats.events_suppressed) == (1, 1, 1)


def test_summaries_and_heartbeats_every_interval(tmp_path: Path, broker: Mosquitto) -> None:
    device = make_device(tmp_path, broker.url)
    with subscriber(broker.url) as sub:
        reporter = DnsReporter(device.directory, 1, [], tmp_path / "spool", poll_s=0.02)
        reporter.start()
        try:
            reporter.offer(rec(PUPIL, 1, "a.com"))
            sub.wait_for(lambda m: any(x.topic.endswith("/summary") for x in m))
            sub.wait_for(lambda m: any(x.topic.endswith("/heartbeat") for x in m))
            reporter.offer(rec(STAFF, 2, "b.com"))
            sub.wait_for(lambda m: len([x for x in m if x.topic.endswith("/summary")]) == 2)
        finally:
            reporter.stop()
        opened = opened_in_order(device, sub.messages)
    summaries = [o for o in opened if o["kind"] is Kind.SUMMARY]
    assert [s["client"]["ip"] for s in summaries] == ["10.0.0.5", "10.0.0.9"]
    assert summaries[0]["end"] <= summaries[1]["start"]
    beats = [o for o in opened if o["kind"] is Kind.HEARTBEAT]
    assert "clean_stop" not in beats[0] and beats[0]["filter_active"] is True
    assert beats[-1]["clean_stop"] is True
