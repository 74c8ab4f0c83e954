"""End to end: a pupil's blocked query on the school DNS filter becomes an alert at the hub.

Real processes and services: Mosquitto, `hedgerow-hub serve`, `hedgerow-dns serve` (enrolled
as a sinkhole from an offline bundle) and `dig`. Reports travel sealed; while the broker is
down they wait in the filter's spool and arrive afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.dns.cli import main as dns_main
from common.identity import Identity
from hub.cli import main as hub_main
from hub.config import HubConfig
from tests.dns_support import FakeUpstream, dig, free_dns_port, write_config
from tests.hub_ingest_fixtures import make_hub, query
from tests.services import Mosquitto, daemon
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


def reports(hub: HubConfig, kind: str) -> int:
    return int(
        query(hub, "SELECT COUNT(*) FROM reports WHERE device = 'dns-1' AND kind = ?", (kind,))[0][
            0
        ]
    )


def blocked_names(hub: HubConfig) -> set[str]:
    return {row[0] for row in query(hub, "SELECT name FROM blocked")}


def test_blocked_query_reaches_the_hub_as_an_alert(tmp_path: Path, broker: Mosquitto) -> None:
    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "dns-1.bundle"
    assert (
        hub_main(
            [
                "enroll",
                "bundle",
                "--config",
                str(hub.path),
                "--device",
                "dns-1",
                "--class",
                "sinkhole",
                "--broker",
                broker.url,
                "--out",
                str(bundle),
            ]
        )
        == 0
    )
    identity_dir = tmp_path / "dns-identity"
    with FakeUpstream() as upstream:
        port = free_dns_port()
        report = (
            f'[report]\nhub = "{broker.url}"\nidentity = "{identity_dir}"\n'
            'interval_s = 10\nimmediate = ["adult"]\n'
        )
        config = write_config(tmp_path, [upstream.address], port, extra=report)
        assert dns_main(["enroll", "--config", str(config), "--bundle", str(bundle)]) == 0
        assert Identity.load(identity_dir).device_class == "sinkhole"
        env_bin = str(BIN)
        with (
            daemon(
                f"{env_bin}/hedgerow-hub",
                "serve",
                "--config",
                str(hub.path),
                log=tmp_path / "hub.log",
            ),
            daemon(
                f"{env_bin}/hedgerow-dns",
                "serve",
                "--config",
                str(config),
                log=tmp_path / "dns.log",
            ),
        ):
            wait_until(lambda: _answers(port), what="hedgerow-dns to answer")
            # The hub's first subscription creates its session: before it, the broker would
            # drop the event (there is no session to hold it yet on a first start).
            hub_log = tmp_path / "hub.log"
            wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
            # An immediate category: a sealed event goes at once, and the hub raises an alert.
            assert "0.0.0.0" in dig(port, "adult.example", "+short", source="127.0.1.10")
            # Generous deadlines: on a loaded CI machine the hub's first opening worker has
            # taken 10 s to start (the hub opens in its own thread meanwhile, more slowly).
            wait_until(lambda: reports(hub, "event") >= 1, timeout=90, what="the immediate event")
            wait_until(lambda: _alerts(hub), timeout=90, what="a blocked-content alert")
            alert = _alerts(hub)[0]
            assert alert["rule"] == "blocked_content" and int(str(alert["severity"])) >= 4
            assert alert["device"] == "dns-1"
            # The window's summary carries the DfE fields: client IP, group, what was blocked.
            pupil = "SELECT body FROM reports WHERE kind = 'summary' AND client_ip = '127.0.1.10'"
            wait_until(lambda: bool(query(hub, pupil)), timeout=40, what="the pupil's summary")
            body = json.loads(query(hub, pupil)[0][0])
            assert body["client"]["group"] == "pupils" and body["source"] == "dns"
            assert {"name": "adult.example", "category": "adult", "count": 1} in body["blocked"]
            # ... and its attempts are stored under that client's group (the Filtering page's
            # and the annual review's "by group"), not the filter device's.
            groups = "SELECT DISTINCT client_group FROM attempts WHERE client_ip = '127.0.1.10'"
            assert [row[0] for row in query(hub, groups)] == ["pupils"]
            # Broker outage: the filter keeps answering and spools; nothing is lost.
            broker.stop()
            assert "0.0.0.0" in dig(port, "casino.example", "+short", source="127.0.1.11")
            summaries_before = reports(hub, "summary")
            broker.start()
            wait_until(
                lambda: "casino.example" in blocked_names(hub),
                timeout=60,
                what="the spooled summary after the outage",
            )
            assert reports(hub, "summary") > summaries_before
        rejected = query(hub, "SELECT COUNT(*) FROM rejections")[0][0]
        assert rejected == 0, (tmp_path / "hub.log").read_text()[-3000:]


@contextmanager
def filter_and_hub(
    tmp_path: Path, broker: Mosquitto, immediate: list[str]
) -> Iterator[tuple[HubConfig, int]]:
    """`hedgerow-hub serve` and `hedgerow-dns serve` (enrolled as dns-1, 10 s summaries, these
    immediate categories), both serving; yields the hub's config and the filter's port."""
    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "dns-1.bundle"
    enrol = ["enroll", "bundle", "--config", str(hub.path), "--device", "dns-1"]
    enrol += ["--class", "sinkhole", "--broker", broker.url, "--out", str(bundle)]
    assert hub_main(enrol) == 0
    identity_dir = tmp_path / "dns-identity"
    with FakeUpstream() as upstream:
        port = free_dns_port()
        report = (
            f'[report]\nhub = "{broker.url}"\nidentity = "{identity_dir}"\n'
            f"interval_s = 10\nimmediate = {json.dumps(immediate)}\n"
        )
        config = write_config(tmp_path, [upstream.address], port, extra=report)
        assert dns_main(["enroll", "--config", str(config), "--bundle", str(bundle)]) == 0
        hub_log = tmp_path / "hub.log"
        with (
            daemon(f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path), log=hub_log),
            daemon(
                f"{BIN}/hedgerow-dns", "serve", "--config", str(config), log=tmp_path / "dns.log"
            ),
        ):
            wait_until(lambda: _answers(port), what="hedgerow-dns to answer")
            # Before the hub's first subscription there is no session to hold an event.
            wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
            yield hub, port
        rejected = query(hub, "SELECT COUNT(*) FROM rejections")[0][0]
        assert rejected == 0, hub_log.read_text()[-3000:]


def summarised(hub: HubConfig, client: str, name: str) -> int:
    """How many lookups of `name` by `client` the stored summaries count."""
    rows = query(
        hub, "SELECT body FROM reports WHERE kind = 'summary' AND client_ip = ?", (client,)
    )
    return sum(
        entry["count"]
        for (body,) in rows
        for entry in json.loads(body)["blocked"]
        if entry["name"] == name
    )


def attempts(hub: HubConfig, client: str, category: str) -> int:
    """What the hub's attempts table (what the rules add up) holds for a client and category."""
    sql = "SELECT COALESCE(SUM(count), 0) FROM attempts WHERE client_ip = ? AND category = ?"
    return int(query(hub, sql, (client, category))[0][0])


def test_each_blocked_lookup_is_counted_once(tmp_path: Path, broker: Mosquitto) -> None:
    """An immediate category sends an event for a blocked lookup and its summary counts the
    lookup again: the hub counts it once. One adult lookup is one attempt and an alert seen
    once; three gambling lookups are 3 in the alert's sentence and in the stored counts."""
    adult_client, gambling_client = "127.0.1.30", "127.0.1.31"
    with filter_and_hub(tmp_path, broker, ["adult", "gambling"]) as (hub, port):
        assert "0.0.0.0" in dig(port, "adult.example", "+short", source=adult_client)
        for _ in range(3):
            assert "0.0.0.0" in dig(port, "casino.example", "+short", source=gambling_client)
        # Reports are delivered in order, so once the summaries counting every lookup are
        # stored, so are the events sent before them (and the rules have run on both).
        wait_until(
            lambda: (
                summarised(hub, adult_client, "adult.example") == 1
                and summarised(hub, gambling_client, "casino.example") == 3
            ),
            timeout=90,
            what="the summaries of every lookup",
        )
    assert reports(hub, "event") >= 2  # each client's first lookup also went as an event
    assert attempts(hub, adult_client, "adult") == 1
    assert attempts(hub, gambling_client, "gambling") == 3
    found = {str(a["summary"]).split(" behind ")[0]: a for a in _alerts(hub)}
    adult = found[f"A device at {adult_client} (group pupils)"]
    assert adult["count"] == 1, adult  # x1: the summary added nothing to the event's alert
    assert "tried to reach an adult site; it was blocked (adult.example)." in str(adult["summary"])
    gambling = found[f"A device at {gambling_client} (group pupils)"]
    assert "tried to reach gambling sites 3 times" in str(gambling["summary"]), gambling
    assert gambling["count"] == 3, gambling  # x3: the attempts the alert stands for


def test_the_anti_bypass_canary_raises_a_bypass_alert(tmp_path: Path, broker: Mosquitto) -> None:
    """Firefox's DoH canary, answered NXDOMAIN by the filter's anti-bypass link, reaches the hub
    in the filter's own category and raises a bypass alert."""
    client = "127.0.1.40"
    with filter_and_hub(tmp_path, broker, []) as (hub, port):
        out = dig(port, "use-application-dns.net", source=client)
        assert "NXDOMAIN" in out, out
        wait_until(lambda: _alerts(hub, "bypass"), timeout=90, what="a bypass alert")
    (alert,) = _alerts(hub, "bypass")
    assert alert["device"] == "dns-1" and alert["severity"] == 4
    assert str(alert["summary"]) == (
        f"A device at {client} (group pupils) behind DNS filter cape-primary/dns-1 tried to get "
        "round the filter with encrypted DNS or a private relay (use-application-dns.net); it "
        "was blocked."
    )
    assert attempts(hub, client, "bypass") == 1
    assert not _alerts(hub)  # not blocked_content as well


def _answers(port: int) -> bool:
    try:
        dig(port, "staff.example", "+short")
        return True
    except AssertionError:
        return False


def _alerts(hub: HubConfig, rule: str = "blocked_content") -> list[dict[str, object]]:
    out = subprocess.run(
        [f"{BIN}/hedgerow-hub", "alerts", "--config", str(hub.path), "--json"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    ).stdout
    return [a for a in json.loads(out) if a["rule"] == rule]


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)


def _checks(hub: HubConfig) -> list[tuple[object, ...]]:
    return query(hub, "SELECT recorded_by, kind, result, passed, failed, what FROM checks")


def test_a_selftest_run_reaches_the_checks_register(tmp_path: Path, broker: Mosquitto) -> None:
    """`hedgerow-dns selftest` leaves its result for the running filter, which sends it sealed
    to the hub: one row in the checks register, recorded by the filter. A run with a failure
    (asked with a config that blocks more than the server does) is also a selftest alert."""
    with filter_and_hub(tmp_path, broker, []) as (hub, port):
        config = tmp_path / "hedgerow-dns.toml"
        result = subprocess.run(
            [f"{BIN}/hedgerow-dns", "selftest", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "hub: the running filter sends it to the checks register" in result.stdout
        wait_until(lambda: len(_checks(hub)) == 1, timeout=60, what="the check at the hub")
        ((by, kind, outcome, passed, failed, what),) = _checks(hub)
        assert (by, kind, outcome, failed) == ("cape-primary/dns-1", "selftest", "pass", 0)
        assert isinstance(passed, int) and passed > 5 and f"127.0.0.1:{port}" in str(what)
        assert not list((tmp_path / "dns-identity" / "selftest").glob("*.json"))

        stricter = config.read_text().replace('block = ["adult"]', 'block = ["adult", "gambling"]')
        (tmp_path / "stricter").mkdir()
        strict = tmp_path / "stricter" / "hedgerow-dns.toml"
        strict.write_text(stricter)
        result = subprocess.run(
            [f"{BIN}/hedgerow-dns", "selftest", "--config", str(strict)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        wait_until(lambda: _alerts(hub, "selftest"), timeout=60, what="a selftest alert")
        rows = sorted(_checks(hub), key=lambda r: str(r[2]))
        assert [r[2] for r in rows] == ["partial", "pass"]
        assert "failed: staff gambling casino.example: expected blocked" in str(rows[0][5])
        (alert,) = _alerts(hub, "selftest")
        assert alert["severity"] == 3 and alert["device"] == "dns-1"
        assert "The filtering self-test on DNS filter cape-primary/dns-1" in str(alert["summary"])

        result = subprocess.run(
            [f"{BIN}/hedgerow-dns", "selftest", "--config", str(config), "--no-report"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0 and "hub:" not in result.stdout
