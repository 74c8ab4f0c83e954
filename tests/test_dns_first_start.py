"""The first start must not leave a school without DNS: a list that cannot be had at all is left
out, retried with backoff and built in once it loads, without a restart; a statutory one blocks
every name meanwhile (docs/dns.md, "A list that cannot be fetched"). `check` stays strict, and
the hub turns the filter's `health` event into an alert.

Real HTTP servers on 127.0.0.1 for the list URLs, the real `hedgerow-dns serve` process, a real
hub database for the rule."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dnslib
import pytest

from agent.dns.cli import main as dns_main
from agent.dns.config import load_config
from agent.filter.catalog import STATUTORY_MISSING, FailClosed, serving
from agent.filter.lists import CategoryIndex, ListError, ListRefresher, ListSpec
from agent.filter.lists.snapshot import FILE
from hub.cli import main as hub_main
from hub.config import HubConfig
from hub.rules import RuleEngine, RulesConfig
from hub.rules.settings import HealthRule
from hub.store import Database
from tests.dns_support import FakeUpstream, dig, free_dns_port, raw, write_config
from tests.hub_ingest_fixtures import make_hub
from tests.services import Mosquitto, daemon, free_port, stop_process
from tests.test_dns_lists_refresh import ListServer
from tests.test_dns_refresh import _Log
from tests.test_dns_to_hub import BIN, _alerts, _answers, summarised
from tests.test_hub_rules_support import (
    T0,
    RecordingListener,
    add_report,
    event,
    open_alerts,
    open_db,
)
from tests.waiting import wait_until

PUPIL = "127.0.1.5"
STAFF = "127.0.2.5"


class Clock:
    """A settable list clock: the backoff is judged without waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def down() -> Iterator[ListServer]:
    """A list server that fails (HTTP 500) until the test mends it."""
    server = ListServer()
    server.served.status = 500
    server.served.body = b"0.0.0.0 remote.example\n"
    try:
        yield server
    finally:
        server.close()


# --- the refresher ---------------------------------------------------------------------------


def test_a_list_with_no_copy_is_left_out_and_retried_with_backoff(
    tmp_path: Path, down: ListServer
) -> None:
    local = tmp_path / "local.txt"
    local.write_text("local.example\n")
    specs = [ListSpec("local", str(local)), ListSpec("remote", down.url)]
    clock = Clock()
    start = clock.now
    # Strict (check, SIGHUP): no copy at all is an error naming the list.
    with pytest.raises(ListError, match=r"HTTP 500"):
        ListRefresher(specs, tmp_path / "strict", clock=clock).load()
    refresher = ListRefresher(specs, tmp_path / "cache", clock=clock, compiled=True)
    index, stats = refresher.load(missing_ok=True)
    assert [s.category for s in stats] == ["local"]
    assert index.lookup("local.example") == index.bit("local")
    assert index.lookup("remote.example") == 0
    assert refresher.missing() == [specs[1]]
    assert [s.serving_from for s in refresher.status()] == ["source", "missing"]
    assert "HTTP 500" in (refresher.status()[1].problem or "")
    assert not (tmp_path / "cache" / FILE).exists()  # not the index of the config
    # Backoff: 2 s after the first failure, then 4, then 8 (up to 15 minutes).
    attempts = [start]
    for gap in (2.0, 4.0, 8.0):
        assert refresher.next_due() == attempts[-1] + gap
        clock.now = attempts[-1] + gap - 0.5
        assert refresher.due() == []
        clock.now = attempts[-1] + gap
        assert refresher.due() == [specs[1]]
        before = len(down.served.requests)
        assert refresher.refresh() is index  # still failing: nothing changes
        assert len(down.served.requests) == before + 1
        attempts.append(clock.now)
    assert refresher.failures() == {specs[0]: 0, specs[1]: 4}
    # The source mends: the next retry takes it, builds it in and clears the missing state.
    down.served.status = 200
    clock.now = attempts[-1] + 16.0
    fresh = refresher.refresh()
    assert fresh is not index
    assert fresh.lookup("remote.example") == fresh.bit("remote")
    assert fresh.lookup("local.example") == fresh.bit("local")
    assert refresher.missing() == []
    assert [s.serving_from for s in refresher.status()] == ["source", "source"]
    # Then it is an ordinary list again: next due after its refresh_h.
    assert refresher.next_due() == start + 24 * 3600  # the local list's


def test_a_refresh_child_takes_a_missing_list_too(tmp_path: Path, down: ListServer) -> None:
    # The server hands the due lists to a child (lists/handoff.py) and adopts its outcome.
    from agent.filter.lists.handoff import handoff_of, job_of, run_job

    local = tmp_path / "local.txt"
    local.write_text("local.example\n")
    specs = [ListSpec("local", str(local)), ListSpec("remote", down.url)]
    clock = Clock()
    server = ListRefresher(specs, tmp_path / "cache", clock=clock, compiled=True)
    server.load(missing_ok=True)
    clock.now += 2.0
    handed = handoff_of(run_job(job_of(server, server.due(), clock.now)))
    server.adopt(handed.status, handed.stats, handed.rebuilt)
    assert server.missing() == [specs[1]] and server.failures()[specs[1]] == 2
    assert server.next_due() == clock.now + 4.0
    down.served.status = 200
    clock.now += 4.0
    handed = handoff_of(run_job(job_of(server, server.due(), clock.now)))
    assert handed.rebuilt
    index = server.adopt(handed.status, handed.stats, handed.rebuilt)
    assert index.lookup("remote.example") == index.bit("remote")
    assert server.missing() == []


# --- a statutory list with no copy: every name blocked but the filter's own ------------------


def test_a_missing_statutory_list_blocks_every_name_but_the_filters_own(tmp_path: Path) -> None:
    spec = load_config(write_config(tmp_path, ["127.0.0.1:53"], free_dns_port())).spec
    iwf = ListSpec("iwf", "https://lists.example/iwf.txt", statutory=True)
    adult = ListSpec("adult", "https://adult.example.net/list.txt")
    spec = replace(spec, lists=(*spec.lists, adult, iwf))
    index = CategoryIndex.empty()
    # A missing list that is not statutory changes nothing here: its category is unfiltered.
    assert serving(spec, index, [adult]) == (spec, index)
    served, closed = serving(spec, index, [adult, iwf], ["broker.school.example"])
    assert isinstance(closed, FailClosed)
    assert STATUTORY_MISSING in served.statutory
    guard = [one for one in served.lists if one.category == STATUTORY_MISSING]
    assert [one.source for one in guard] == ["no copy yet of https://lists.example/iwf.txt"]
    bit = 1 << closed.categories.index(STATUTORY_MISSING)
    table = [
        ("bbc.co.uk", bit),
        ("www.google.com", bit),
        ("example", bit),
        ("lists.example", 0),  # where the missing list comes from
        ("cdn.lists.example", 0),
        ("adult.example.net", 0),  # every list host
        ("broker.school.example", 0),  # the hub
        ("notlists.example", bit),
    ]
    for name, expected in table:
        assert closed.lookup(name) == expected, name


# --- the real server -------------------------------------------------------------------------


def _config(tmp_path: Path, upstream: FakeUpstream, remote: str, iwf: str, metrics: int) -> Path:
    """The test config, its IWF list (statutory) from `iwf`, a list "remote" from `remote`
    blocked for staff, and a metrics endpoint."""
    path = write_config(tmp_path, [upstream.address], free_dns_port())
    text = path.read_text()
    text = text.replace(f'source = "{tmp_path / "lists" / "iwf.txt"}"', f'source = "{iwf}"')
    extra = f'\n[[lists]]\ncategory = "remote"\nsource = "{remote}"\n'
    text = text.replace("[groups.pupils]", extra + "\n[groups.pupils]", 1)
    text = text.replace('block = ["adult"]', 'block = ["adult", "remote"]')
    text = text.replace("[server]\n", f'[server]\nmetrics = "127.0.0.1:{metrics}"\n')
    path.write_text(text)
    return path


def _answer(port: int, name: str, source: str = STAFF) -> tuple[str, bytes]:
    query = dnslib.DNSRecord.question(name, "A")
    query.add_ar(dnslib.EDNS0(udp_len=1232))  # for the extended error's text
    wire = raw(port, query.pack(), source)
    reply = dnslib.DNSRecord.parse(wire)
    return (str(reply.rr[0].rdata) if reply.rr else "-"), wire


def _address(port: int, name: str, source: str = STAFF) -> str:
    return _answer(port, name, source)[0]


def _metrics(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    samples = {}
    for line in lines:
        if line.startswith("hedgerow_dns_list_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _sample(samples: dict[str, float], metric: str, category: str) -> float:
    found = [v for k, v in samples.items() if k.startswith(metric + "{") and category in k]
    assert len(found) == 1, (metric, category, samples)
    return found[0]


def test_the_server_starts_without_lists_it_cannot_fetch_and_takes_them_when_they_come(
    tmp_path: Path, down: ListServer
) -> None:
    iwf = ListServer()
    iwf.served.status = 500
    iwf.served.body = b"csam.example\nmore-csam.example\n"
    metrics = free_port()
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, down.url, iwf.url, metrics)
        # check is strict: both lists cannot be had and have no copy.
        checked = subprocess.run(
            [sys.executable, "-m", "agent.dns.cli", "check", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 1
        assert down.url in checked.stderr and iwf.url in checked.stderr
        # serve starts anyway (the real command, under the installation's seed).
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.dns.cli", "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            log = _Log(proc)
            at = log.wait("ready")
            assert "serving without it, retrying in 2 s" in log.since(0)
            port = load_config(path).server.listen[0].port
            # The statutory list is missing: every name is blocked, for every group, as
            # statutory_missing (not as iwf: the hub must not read a CSAM attempt into it).
            asked = (("bbc.co.uk", STAFF), ("casino.example", STAFF), ("x.org", PUPIL))
            for name, client in asked:
                address, wire = _answer(port, name, client)
                assert address == "0.0.0.0", name
                assert b"statutory_missing" in wire and b"iwf" not in wire
            samples = _metrics(metrics)
            assert _sample(samples, "hedgerow_dns_list_missing", "iwf") == 1
            assert _sample(samples, "hedgerow_dns_list_missing", "remote") == 1
            assert _sample(samples, "hedgerow_dns_list_missing", "adult") == 0
            # `status` says so in words, and exits 1 while a list is missing.
            shown = _status(path)
            assert shown.returncode == 1, shown
            assert f"MISSING list {iwf.url} (category iwf)" in shown.stdout
            assert f"MISSING list {down.url} (category remote)" in shown.stdout
            # Retried with backoff, not once: wait for a retry to fail, then mend the IWF list.
            at = log.wait("still missing, retrying in", at) + 1
            assert _sample(_metrics(metrics), "hedgerow_dns_list_fetch_failures_total", "iwf") >= 2
            iwf.served.status = 200
            at = log.wait(f"list {iwf.url}: loaded at last", at) + 1
            log.wait("lists refreshed: ", at)
            # Normal filtering, without a restart: the IWF names blocked, the rest answered;
            # the remote list is still missing, so its name is not blocked yet.
            assert _address(port, "bbc.co.uk") == "192.0.2.1"
            assert _address(port, "more-csam.example") == "0.0.0.0"
            assert _address(port, "casino.example", PUPIL) == "0.0.0.0"
            assert _address(port, "remote.example") == "192.0.2.1"
            samples = _metrics(metrics)
            assert _sample(samples, "hedgerow_dns_list_missing", "iwf") == 0
            assert _sample(samples, "hedgerow_dns_list_missing", "remote") == 1
            # The other list mends too.
            down.served.status = 200
            at = log.wait(f"list {down.url}: loaded at last", at) + 1
            log.wait("lists refreshed: ", at)
            assert _address(port, "remote.example") == "0.0.0.0"
            assert _address(port, "remote.example", PUPIL) == "192.0.2.1"  # staff block it
            assert _sample(_metrics(metrics), "hedgerow_dns_list_missing", "remote") == 0
            shown = _status(path)
            assert shown.returncode == 0 and "healthy" in shown.stdout, shown
            assert "MISSING" not in shown.stdout
            # With the copies cached, check passes again even with both sources down.
            down.served.status = iwf.served.status = 500
            checked = subprocess.run(
                [sys.executable, "-m", "agent.dns.cli", "check", "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert checked.returncode == 0, checked.stderr
        finally:
            stop_process(proc)
            iwf.close()
            if proc.stderr is not None:
                proc.stderr.close()


def _status(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.dns.cli", "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the hub's health rule -------------------------------------------------------------------


@pytest.fixture(params=["sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated hub database."""
    database = open_db(request, tmp_path)
    yield database
    database.close()


def _health(problem: str, category: str, statutory: bool) -> dict[str, object]:
    detail = {
        "problem": problem,
        "list": f"https://lists.example/{category}.txt",
        "category": category,
        "statutory": statutory,
        "error": "list https://lists.example/x: cannot fetch: timed out",
    }
    return event("health", detail=detail)


def test_the_hub_alerts_on_a_missing_list_and_closes_it_when_it_loads(db: Database) -> None:
    rules = replace(RulesConfig(), health=HealthRule(statutory_missing_severity=5))
    engine = RuleEngine(rules, RecordingListener())
    steps = [
        (T0, _health("missing", "adult", False)),
        (T0 + 1000, _health("missing", "adult", False)),  # said again: the same alert
        (T0 + 2000, _health("missing", "iwf", True)),
    ]
    for at, payload in steps:
        with db.transaction():
            report = add_report(db, payload, time_ms=at, device="dns-1", device_class="sinkhole")
            engine.evaluate(db, report)
    assert not engine.failures
    found = open_alerts(db)  # sorted by key: adult's, then iwf's
    assert [(rule, severity, count) for rule, _, severity, count, _ in found] == [
        ("health", 4, 2),
        ("health", 5, 1),
    ]
    summaries = [row[0] for row in db.execute("SELECT summary FROM alerts ORDER BY id")]
    assert "'adult' is not being filtered" in summaries[0]
    assert "blocks every name" in summaries[1]
    # No blocked attempt is read into a health event (it names the category only in detail).
    assert not db.execute("SELECT 1 FROM attempts")
    with db.transaction():
        payload = _health("recovered", "iwf", True)
        report = add_report(db, payload, time_ms=T0 + 3000, device="dns-1", device_class="sinkhole")
        engine.evaluate(db, report)
    assert [severity for _, _, severity, _, _ in open_alerts(db)] == [4]
    # Turned off, nothing is raised.
    off = RuleEngine(replace(RulesConfig(), health=HealthRule(enabled=False)))
    with db.transaction():
        payload = _health("missing", "gambling", False)
        report = add_report(db, payload, time_ms=T0 + 4000, device="dns-2", device_class="sinkhole")
        off.evaluate(db, report)
    assert [severity for _, _, severity, _, _ in open_alerts(db)] == [4]


def test_what_is_blocked_while_the_statutory_list_is_missing_raises_no_abuse_alert(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """End to end (Mosquitto, `hedgerow-hub serve`, `hedgerow-dns serve`): the names blocked
    while the IWF list is missing reach the hub as statutory_missing, which raises no abuse
    alert, while the missing list raises a `health` alert; once the list loads, that alert is
    resolved and a lookup on it raises the blocked_content alert as ever."""
    iwf = ListServer()
    iwf.served.status = 500
    iwf.served.body = b"csam.example\n"
    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "dns-1.bundle"
    enrol = ["enroll", "bundle", "--config", str(hub.path), "--device", "dns-1"]
    enrol += ["--class", "sinkhole", "--broker", broker.url, "--out", str(bundle)]
    assert hub_main(enrol) == 0
    identity_dir = tmp_path / "dns-identity"
    client = "127.0.1.50"
    try:
        with FakeUpstream() as upstream:
            port = free_dns_port()
            report = (
                f'[report]\nhub = "{broker.url}"\nidentity = "{identity_dir}"\n'
                f"interval_s = 10\nimmediate = {json.dumps(['iwf'])}\n"
            )
            config = write_config(tmp_path, [upstream.address], port, extra=report)
            text = config.read_text()
            local = f'source = "{tmp_path / "lists" / "iwf.txt"}"'
            config.write_text(text.replace(local, f'source = "{iwf.url}"'))
            assert dns_main(["enroll", "--config", str(config), "--bundle", str(bundle)]) == 0
            hub_log, dns_log = tmp_path / "hub.log", tmp_path / "dns.log"
            # The hub first: the filter tells it about the missing list as it starts, and
            # before the hub's first subscription the broker has no session to hold that.
            hub_daemon = daemon(
                f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path), log=hub_log
            )
            with hub_daemon:
                wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
                with daemon(f"{BIN}/hedgerow-dns", "serve", "--config", str(config), log=dns_log):
                    _the_list_returns(hub, port, client, iwf, dns_log)
            (alert,) = _alerts(hub)
            assert alert["severity"] == 5 and "csam.example" in str(alert["summary"])
            wait_until(lambda: not _alerts(hub, "health"), timeout=90, what="health resolved")
    finally:
        iwf.close()


def _the_list_returns(
    hub: HubConfig, port: int, client: str, iwf: ListServer, dns_log: Path
) -> None:
    """The statutory_missing answers, the health alert, then the list loading at last."""
    wait_until(lambda: _answers(port), what="hedgerow-dns to answer")
    assert "0.0.0.0" in dig(port, "bbc.co.uk", "+short", source=client)
    wait_until(
        lambda: summarised(hub, client, "bbc.co.uk") == 1,
        timeout=90,
        what="the summary of the lookup blocked while the list is missing",
    )
    assert not _alerts(hub)  # statutory_missing is no abuse attempt
    # ...but the missing list itself is: the filter's health event
    wait_until(lambda: _alerts(hub, "health"), timeout=90, what="the health alert")
    (health,) = _alerts(hub, "health")
    assert "iwf" in str(health["summary"]), health
    iwf.served.status = 200
    wait_until(lambda: "loaded at last" in dns_log.read_text(), timeout=60, what="the list")
    wait_until(
        lambda: "192.0.2.1" in dig(port, "bbc.co.uk", "+short", source=client),
        what="normal answers again",
    )
    assert "0.0.0.0" in dig(port, "csam.example", "+short", source=client)
    wait_until(lambda: _alerts(hub), timeout=90, what="the IWF alert")


def test_status_says_when_the_filter_is_not_running(tmp_path: Path, down: ListServer) -> None:
    with FakeUpstream() as upstream:
        path = _config(tmp_path, upstream, down.url, down.url, free_port())
        shown = _status(path)
    assert shown.returncode == 1
    assert "do not answer" in shown.stderr and "is hedgerow-dns serve running?" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1
